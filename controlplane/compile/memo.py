"""The compiler's memo: every value a compiler builds, under a key of exactly its inputs.

A key is a tuple whose first element names the family of the build (``Family``), the rest
the inputs that shape it; proxies whose resources would be identical ask with equal keys and
share one value (one message, one serialization). Each value is kept with the dependency
tokens its build read (``compile/tracking.py``); the memo of the next snapshot's compiler
keeps every value whose tokens the change did not touch, so a canary change rebuilds one
route table, not a thousand clusters.

Neighbours: the generators (``cds``, ``eds``, ``lds``, ``rds``) and ``compile/context.py``
ask through ``CompileContext.cached``; ``store/dependencies.py`` computes the touched tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar

from controlplane.compile.tracking import TrackedSnapshot
from controlplane.store.tokens import Token

_T = TypeVar("_T")


class Family(StrEnum):
    """What a memoized build makes (the first element of its key)."""

    SERVICES = "services"  # the services visible from one namespace
    SIDECAR_SCOPE = "sidecar-scope"  # the Sidecar scope of one namespace and labels
    SCOPED_SERVICES = "scoped-services"  # the services (and ports) one scope imports
    CLUSTERS = "cds"  # the outbound clusters of one service
    UPSTREAM_SECURITY = "upstream-security"
    STATIC_CLUSTERS = "cds-static"
    INBOUND_CLUSTER = "cds-inbound"
    LOAD_ASSIGNMENT = "eds"
    VIRTUAL_OUTBOUND = "lds-virtual-outbound"
    HTTP_PORT_LISTENER = "lds-http-port"
    SNIFFED_PORT_LISTENER = "lds-sniffed-port"
    TCP_PORT_LISTENER = "lds-tcp-port"
    VIRTUAL_INBOUND = "lds-virtual-inbound"
    LOCAL_LISTENER = "lds-local"
    LOCAL_TCP_LISTENER = "lds-local-tcp"
    LOCAL_INBOUND_LISTENER = "lds-local-inbound"
    VIRTUAL_HOST = "vhost"
    PORT_ROUTES = "rds-port"
    LOCAL_ROUTES = "rds-local"
    PEER_AUTHENTICATION = "authn"
    AUTHORIZATION = "authz"
    REJECTED = "rejected"
    REQUEST_AUTHENTICATION = "jwt"
    GATEWAY_MERGE = "gateway-merge"  # the Gateways a router proxy gets, merged
    GATEWAY_LISTENERS = "lds-gateway"
    GATEWAY_ROUTES = "rds-gateway"
    TELEMETRY = "telemetry"  # what one workload logs and traces (compile/telemetry.py)


# Builds that are functions of their key and the snapshot alone: the reads of whichever
# build first asked for them are not their inputs (see ``Tracker.push``).
_UNSEEDED = frozenset(
    {
        Family.PEER_AUTHENTICATION,
        Family.AUTHORIZATION,
        Family.REJECTED,
        Family.REQUEST_AUTHENTICATION,
        Family.SIDECAR_SCOPE,
        Family.TELEMETRY,
    }
)

# A family, then the inputs of the build.
MemoKey = tuple[Family, *tuple[Hashable, ...]]


class _Entry(Generic[_T]):
    __slots__ = ("value", "tokens")

    def __init__(self, value: _T, tokens: frozenset[Token]) -> None:
        self.value = value
        self.tokens = tokens


class Memo:
    """The values one compiler built or inherited, each with the tokens its build read."""

    def __init__(
        self,
        reads: TrackedSnapshot,
        previous: Memo | None = None,
        touched: frozenset[Token] | None = None,
    ) -> None:
        """With ``previous`` and the ``touched`` tokens of the change from its snapshot to
        this one, every entry whose tokens the change did not touch is inherited."""
        self._reads = reads
        # Each entry under a key holds the type its key's build returned (``cached`` is the
        # only writer); the dict itself holds every family, hence Any.
        self._entries: dict[MemoKey, _Entry[Any]] = {}
        self.builds = 0  # misses: how much this memo actually built
        if previous is not None and touched is not None:
            self._entries = {
                k: entry
                for k, entry in previous._entries.items()
                if entry.tokens.isdisjoint(touched)
            }

    def cached(self, key: MemoKey, build: Callable[[], _T]) -> _T:
        """The value built for ``key``, building it once per snapshot (or not at all, when a
        previous memo's value is still valid).

        A build's dependencies are recorded automatically: every snapshot accessor it reads
        (directly or through nested cached builds), plus what its caller read directly since
        its previous build of the same family: inputs it may pass into the build. A value
        taken from another cached build and passed in must be part of ``key``. Families in
        ``_UNSEEDED`` are functions of their key and the snapshot alone.
        """
        reads = self._reads
        family = key[0]
        entry: _Entry[_T] | None = self._entries.get(key)
        if entry is None:
            recorder = reads.start_recording(family, family not in _UNSEEDED)
            try:
                value = build()
            finally:
                reads.stop_recording(recorder)
            entry = _Entry(value, frozenset(recorder.tokens))
            self._entries[key] = entry
            self.builds += 1
            reads.depends_on(entry.tokens)
        else:
            reads.reused(family, entry.tokens)
        return entry.value

    def entries(self) -> Iterator[tuple[Any, frozenset[Token]]]:
        """Every value with the tokens its build read (to trace a compiled resource back to
        the resources it was built from, ``status/programmed.py``)."""
        for entry in list(self._entries.values()):
            yield entry.value, entry.tokens

    def dependencies(self) -> Mapping[MemoKey, frozenset[Token]]:
        """Key -> the dependency tokens recorded for it (for tests and debugging)."""
        return {k: entry.tokens for k, entry in self._entries.items()}
