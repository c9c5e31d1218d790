"""Reading a Snapshot and knowing what was read.

``SnapshotReader`` is what compile builds and the store's in-context checks read: the
Snapshot's accessors, and nothing else. A ``Snapshot`` is one (it records nothing); a
``ReportingView`` is another, which reports the dependency token (``store/tokens.py``) of
every read to a callback before answering from the snapshot. Which accessor reads which token
is decided here and only here, next to ``store/dependencies.py``, which decides which tokens
a change touches: the two must agree for incremental work to be right.

The store's checks collect the tokens into a set; the compiler's wrapper
(``compile/tracking.py``) files them under the build that is running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, overload

from controlplane.api.issues import ResourceKey
from controlplane.api.mesh import MESH_CONFIG_KIND, MeshConfigSpec
from controlplane.api.networking import VirtualService
from controlplane.api.policy_scope import RefusedPolicy
from controlplane.store.registry import MeshEndpoint, MeshService
from controlplane.store.snapshot import MergedDestinationRule, Snapshot
from controlplane.store.tokens import (
    ANY_ADDRESS,
    DESTINATION_RULE_HOST,
    ENDPOINTS,
    SERVICE_HOST,
    WILDCARD_HOST,
    Token,
    destination_rules_token,
    key_token,
    kind_token,
    namespace_token,
    targets_token,
    virtual_services_token,
)

_M = TypeVar("_M")

Report = Callable[..., None]  # called with the tokens of one read

# Tokens every read of their accessor reports (built once: reads are the compiler's hot path).
_SERVICES = kind_token("Service")
_MESH = kind_token(MESH_CONFIG_KIND)
_SERVICE_ENTRIES = kind_token("ServiceEntry")
_ANY_TARGETS = targets_token(ANY_ADDRESS)
_WILDCARD_VIRTUAL_SERVICES = virtual_services_token(WILDCARD_HOST)
_WILDCARD_DESTINATION_RULES = destination_rules_token(WILDCARD_HOST)


class SnapshotReader(Protocol):
    """The accessors of a Snapshot that compile and the in-context checks use."""

    @property
    def version(self) -> int: ...

    @property
    def services(self) -> Mapping[str, MeshService]: ...

    @property
    def mesh(self) -> MeshConfigSpec: ...

    @overload
    def of_kind(self, kind: type[_M]) -> Mapping[ResourceKey, _M]: ...

    @overload
    def of_kind(self, kind: str) -> Mapping[ResourceKey, Any]: ...

    def get(self, key: ResourceKey) -> Any | None: ...

    def in_namespace(self, kind: str, namespace: str) -> tuple[Any, ...]: ...

    def rejected(self, kind: str) -> tuple[RefusedPolicy, ...]: ...

    def endpoints(self, hostname: str) -> tuple[MeshEndpoint, ...]: ...

    def service_targets(self, address: str) -> tuple[tuple[MeshService, MeshEndpoint], ...]: ...

    def virtual_services_for(
        self, hostname: str, client_namespace: str
    ) -> tuple[VirtualService, ...]: ...

    def virtual_services_claiming(self, hostname: str) -> tuple[VirtualService, ...]: ...

    def destination_rule(
        self, hostname: str, client_namespace: str
    ) -> MergedDestinationRule | None: ...


class ReportingView:
    """A SnapshotReader over ``snapshot`` that calls ``report(*tokens)`` on every read."""

    __slots__ = ("snapshot", "_report")

    def __init__(self, snapshot: Snapshot, report: Report) -> None:
        self.snapshot = snapshot
        self._report = report

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def services(self) -> Mapping[str, MeshService]:
        self._report(_SERVICES, _SERVICE_ENTRIES)
        return self.snapshot.services

    @property
    def mesh(self) -> MeshConfigSpec:
        """The mesh config in effect: a change of it touches ``kind_token("MeshConfig")``."""
        self._report(_MESH)
        return self.snapshot.mesh

    @overload
    def of_kind(self, kind: type[_M]) -> Mapping[ResourceKey, _M]: ...

    @overload
    def of_kind(self, kind: str) -> Mapping[ResourceKey, Any]: ...

    def of_kind(self, kind: type[object] | str) -> Mapping[ResourceKey, Any]:
        self._report(kind_token(kind if isinstance(kind, str) else kind.__name__))
        return self.snapshot.of_kind(kind)

    def get(self, key: ResourceKey) -> Any | None:
        self._report(key_token(key))
        return self.snapshot.get(key)

    def in_namespace(self, kind: str, namespace: str) -> tuple[Any, ...]:
        """A change of a resource of ``kind`` in ``namespace`` touches this read only."""
        self._report(namespace_token(kind, namespace))
        return self.snapshot.in_namespace(kind, namespace)

    def rejected(self, kind: str) -> tuple[RefusedPolicy, ...]:
        self._report(kind_token(kind))
        return self.snapshot.rejected(kind)

    def endpoints(self, hostname: str) -> tuple[MeshEndpoint, ...]:
        self._report((ENDPOINTS, hostname))  # endpoints_token, inline
        return self.snapshot.endpoints(hostname)

    def service_targets(self, address: str) -> tuple[tuple[MeshService, MeshEndpoint], ...]:
        self._report(targets_token(address), _ANY_TARGETS)
        return self.snapshot.service_targets(address)

    def virtual_services_for(
        self, hostname: str, client_namespace: str
    ) -> tuple[VirtualService, ...]:
        self._report(virtual_services_token(hostname), _WILDCARD_VIRTUAL_SERVICES)
        return self.snapshot.virtual_services_for(hostname, client_namespace)

    def virtual_services_claiming(self, hostname: str) -> tuple[VirtualService, ...]:
        self._report(virtual_services_token(hostname))
        return self.snapshot.virtual_services_claiming(hostname)

    def destination_rule(
        self, hostname: str, client_namespace: str
    ) -> MergedDestinationRule | None:
        # destination_rules_token, service_token: inline, this is the compiler's hottest read
        self._report(
            (DESTINATION_RULE_HOST, hostname), _WILDCARD_DESTINATION_RULES, (SERVICE_HOST, hostname)
        )
        return self.snapshot.destination_rule(hostname, client_namespace)


def collecting(snapshot: Snapshot) -> tuple[ReportingView, set[Token]]:
    """A view of ``snapshot`` and the set that collects the tokens of every read through it."""
    tokens: set[Token] = set()

    def report(*read: Token) -> None:
        tokens.update(read)

    return ReportingView(snapshot, report), tokens
