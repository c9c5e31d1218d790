"""Dependency tokens: the vocabulary shared by what a read depended on and what a change touched.

A token names one part of a Snapshot that a reader can depend on: every resource of a kind,
one resource, one host's endpoints, the VirtualServices of one host, ... Readers record them
(``store/reads.py``: which accessor reads which token); ``store/dependencies.py`` turns the
keys of a change into the tokens it touched. Something built from a snapshot whose tokens do
not meet a change's tokens is still right for the next snapshot.

Tokens are plain tuples so that sets of them are cheap to store and intersect. This module
imports nothing of the store, so that the Snapshot, its readers and the change computation
can all depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from controlplane.api.issues import ResourceKey

Token = tuple[Hashable, ...]

WILDCARD_HOST = "*wildcard*"
ANY_ADDRESS = "*any*"


def kind_token(kind: str) -> Token:
    """Everything of one kind (a read of the whole collection)."""
    return ("kind", kind)


def key_token(key: ResourceKey) -> Token:
    """One resource, by key."""
    return ("key", key)


def namespace_token(kind: str, namespace: str) -> Token:
    """Every resource of one kind in one namespace."""
    return ("ns", kind, namespace)


# The first element of the per-host tokens (readers on the hot path build these inline).
SERVICE_HOST = "Service@host"
ENDPOINTS = "endpoints"
DESTINATION_RULE_HOST = "DestinationRule@host"


def service_token(hostname: str) -> Token:
    """One service's own definition (ports, selector, exportTo)."""
    return (SERVICE_HOST, hostname)


def endpoints_token(hostname: str) -> Token:
    """The endpoints of one service (its pods or EndpointSlices)."""
    return (ENDPOINTS, hostname)


def virtual_services_token(hostname: str) -> Token:
    """The VirtualServices that name one host (``WILDCARD_HOST``: any wildcard host)."""
    return ("VirtualService@host", hostname)


def destination_rules_token(hostname: str) -> Token:
    """The DestinationRules for one host (``WILDCARD_HOST``: any wildcard host)."""
    return (DESTINATION_RULE_HOST, hostname)


def targets_token(address: str) -> Token:
    """What a workload at one address serves: the services whose endpoints are there
    (``ANY_ADDRESS``: any address, for changes that can reshape every workload's)."""
    return ("targets", address)


class ChangeTokens:
    """The tokens touched by the change of ``keys`` from the snapshot of version ``since`` to
    the next one the store published.

    Computed on first need, at most once: a change nobody compiles against (a cold load, a
    burst the debounce coalesces) costs nothing. The store calls ``release`` when it publishes
    the next change, so an unused computation does not keep older snapshots alive.
    """

    __slots__ = ("since", "keys", "_touched", "_compute")

    def __init__(
        self,
        since: int,
        keys: frozenset[ResourceKey],
        touched: frozenset[Token] | Callable[[], frozenset[Token]],
    ) -> None:
        self.since = since
        self.keys = keys
        self._touched: frozenset[Token] | None = None
        self._compute: Callable[[], frozenset[Token]] | None = None
        if isinstance(touched, frozenset):
            self._touched = touched
        else:
            self._compute = touched

    @property
    def touched(self) -> frozenset[Token] | None:
        """The tokens (computed now if needed), or None once released uncomputed."""
        if self._touched is None and self._compute is not None:
            self._touched, self._compute = self._compute(), None
        return self._touched

    def release(self) -> None:
        """Forget how to compute the tokens (what has been computed stays)."""
        self._compute = None

    def between(self, version: int, keys: Iterable[ResourceKey]) -> frozenset[Token] | None:
        """The touched tokens, if they are those of a change of exactly ``keys`` from the
        snapshot of ``version`` (else None: the caller computes them)."""
        if version != self.since or self.keys != frozenset(keys):
            return None
        return self.touched
