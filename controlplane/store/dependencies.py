"""Dependency tokens: what a compiled resource read from a snapshot, and what a change touched.

A ``Snapshot`` records a token each time one of its accessors is read while a ``Recorder`` is
active (``services`` -> every Service, ``endpoints(host)`` -> that host's endpoints, ...).
``change_tokens`` turns the keys of a store change into the tokens they invalidate, using the
snapshots before and after the change. A compiled resource whose recorded tokens do not meet
the change's tokens is still correct for the new snapshot and is reused as it is.

Tokens are plain tuples so that sets of them are cheap to store and intersect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from controlplane.api.issues import ResourceKey
from controlplane.store.registry import fqdn, pod_ip, selects

if TYPE_CHECKING:
    from controlplane.store.snapshot import Snapshot

Token = tuple[Any, ...]

WILDCARD_HOST = "*wildcard*"


def kind_token(kind: str) -> Token:
    """Everything of one kind (a read of the whole collection)."""
    return ("kind", kind)


def key_token(key: ResourceKey) -> Token:
    """One resource, by key."""
    return ("key", key)


def namespace_token(kind: str, namespace: str) -> Token:
    """Every resource of one kind in one namespace."""
    return ("ns", kind, namespace)


def service_token(hostname: str) -> Token:
    """One service's own definition (ports, selector, exportTo)."""
    return ("Service@host", hostname)


def endpoints_token(hostname: str) -> Token:
    """The endpoints of one service (its pods or EndpointSlices)."""
    return ("endpoints", hostname)


def virtual_services_token(hostname: str) -> Token:
    """The VirtualServices that name one host (``WILDCARD_HOST``: any wildcard host)."""
    return ("VirtualService@host", hostname)


def destination_rules_token(hostname: str) -> Token:
    """The DestinationRules for one host (``WILDCARD_HOST``: any wildcard host)."""
    return ("DestinationRule@host", hostname)


def targets_token(address: str) -> Token:
    """What a workload at one address serves: the services whose endpoints are there
    (``ANY_ADDRESS``: any address, for changes that can reshape every workload's)."""
    return ("targets", address)


ANY_ADDRESS = "*any*"


class Recorder:
    """The tokens read while a build runs.

    ``tokens`` is everything the build depended on: its own reads, its nested builds' tokens,
    and the inputs its caller read for it. A caller that reads an input and passes it into a
    build (rather than letting the build read it) makes that input a dependency of the
    build: ``reads`` keeps the build's *direct* reads in order (nested builds' reads stay
    out, so sibling builds do not depend on each other's inputs), and a new build of a
    family (its memo key's first element) is seeded with what was read directly since the
    previous build of the same family. So in ``rule = snapshot.destination_rule(...);
    self.other_build(...); self._cached(("cds", ...), build)`` the cds build depends on the
    rule even though another build came in between.
    """

    __slots__ = ("tokens", "reads", "consumed")

    def __init__(self, seed: Iterable[Token] = ()) -> None:
        self.tokens: set[Token] = set(seed)
        self.reads: list[Token] = list(seed)
        self.consumed: dict[object, int] = {}  # family -> len(reads) at its last build

    def inputs_for(self, family: object) -> list[Token]:
        """The direct reads since the last build of ``family``; marks them consumed."""
        start = self.consumed.get(family, 0)
        self.consumed[family] = len(self.reads)
        return self.reads[start:]


class Tracker:
    """The stack of active recorders of one snapshot (compilation is single-threaded).

    Outside any recording a top-level recorder keeps the direct reads, so that a top-level
    caller's reads still become dependencies of the builds it starts; ``forget`` ends that
    scope (e.g. before compiling for the next proxy).
    """

    __slots__ = ("stack", "top")

    def __init__(self) -> None:
        self.stack: list[Recorder] = []
        self.top = Recorder()

    def read(self, *tokens: Token) -> None:
        stack = self.stack
        if not stack:
            self.top.reads.extend(tokens)
            return
        for recorder in stack:
            recorder.tokens.update(tokens)
        stack[-1].reads.extend(tokens)

    def read_all(self, tokens: Iterable[Token]) -> None:
        """Tokens of a nested build (hit or miss) become the enclosing builds' tokens too."""
        for recorder in self.stack:
            recorder.tokens.update(tokens)

    def consumed(self, family: object) -> None:
        """A build of ``family`` was found in the memo: the caller's reads so far went to it
        (only the mark moves: no copy of the reads, this runs for every memo hit)."""
        caller = self.stack[-1] if self.stack else self.top
        caller.consumed[family] = len(caller.reads)

    def forget(self) -> None:
        """End the top-level scope (reads before this are no build's dependency)."""
        self.top = Recorder()

    def push(self, family: object = None, seeded: bool = True) -> Recorder:
        """Start a build's recorder; ``seeded``: its caller's direct reads since the last
        build of ``family`` are its inputs too (False for a build that reads everything it
        uses from the snapshot itself, so its caller's reads stay the caller's)."""
        caller = self.stack[-1] if self.stack else self.top
        recorder = Recorder(caller.inputs_for(family) if seeded else ())
        self.stack.append(recorder)
        return recorder

    def pop(self, recorder: Recorder) -> None:
        popped = self.stack.pop()
        assert popped is recorder, "recorders must nest"


def change_tokens(old: Snapshot, new: Snapshot, keys: Iterable[ResourceKey]) -> frozenset[Token]:
    """The tokens that the change from ``old`` to ``new`` of ``keys`` invalidates."""
    out: set[Token] = set()
    for key in keys:
        out.add(kind_token(key.kind))
        out.add(key_token(key))
        out.add(namespace_token(key.kind, key.namespace))
        for snapshot in (old, new):
            resource = snapshot._kind(key.kind).get(key)
            if resource is not None:
                out.update(_semantic_tokens(snapshot, key, resource))
    return frozenset(out)


# Derived indexes of a Snapshot (its cached properties) and the kinds each is derived from.
_INDEXES: dict[str, frozenset[str]] = {
    "_services": frozenset({"Service"}),
    "_services_by_namespace": frozenset({"Service"}),
    "_pods_by_namespace": frozenset({"Pod"}),
    "_pods_by_label": frozenset({"Pod"}),
    "_slices_by_service": frozenset({"EndpointSlice"}),
    "_targets_by_address": frozenset({"Service", "Pod", "EndpointSlice"}),
    "_virtual_services_by_host": frozenset({"VirtualService"}),
    "_wildcard_virtual_service_hosts": frozenset({"VirtualService"}),
    "_destination_rules_by_namespace": frozenset({"DestinationRule"}),
}
_LOOKUPS = ("_endpoints", "_merged_rules")


def inherit_indexes(snapshot: Snapshot, previous: Snapshot, changed_kinds: Iterable[str]) -> None:
    """Give ``snapshot`` the indexes of ``previous`` whose kinds did not change, instead of
    recomputing them for every snapshot (they are cached properties: instance attributes)."""
    kinds = set(changed_kinds)
    mine, theirs = snapshot.__dict__, previous.__dict__
    for name, derived_from in _INDEXES.items():
        if name in theirs and name not in mine and derived_from.isdisjoint(kinds):
            mine[name] = theirs[name]


def inherit_everything(snapshot: Snapshot, same: Snapshot) -> None:
    """Give ``snapshot`` every index and lookup of ``same``, a snapshot of the same resources.

    The lookup caches are shared, not copied: what one of them looks up the other finds (the
    store's next probe then inherits what the compiler looked up in the published one)."""
    mine, theirs = snapshot.__dict__, same.__dict__
    for name in _LOOKUPS:
        getattr(same, name)  # created (empty) if need be, so that there is one to share
    for name in (*_INDEXES, *_LOOKUPS):
        if name in theirs and name not in mine:
            mine[name] = theirs[name]


def inherit_lookups(snapshot: Snapshot, previous: Snapshot, touched: frozenset[Token]) -> None:
    """Give ``snapshot`` the endpoint and DestinationRule lookups of ``previous`` that the
    change between them (``touched``) left valid."""
    mine, theirs = snapshot.__dict__, previous.__dict__
    if "_endpoints" in theirs and "_endpoints" not in mine:
        mine["_endpoints"] = {
            host: found
            for host, found in list(theirs["_endpoints"].items())
            if endpoints_token(host) not in touched
        }
    if "_merged_rules" in theirs and "_merged_rules" not in mine:
        if destination_rules_token(WILDCARD_HOST) in touched:
            mine["_merged_rules"] = {}
        else:
            mine["_merged_rules"] = {
                key: rule
                for key, rule in list(theirs["_merged_rules"].items())
                if destination_rules_token(key[0]) not in touched
                and service_token(key[0]) not in touched
            }


def _services_in(snapshot: Snapshot, namespace: str) -> tuple[Any, ...]:
    index = snapshot.__dict__.get("_services_by_namespace")
    if index is None:
        grouped: dict[str, list[Any]] = {}
        for service in snapshot._services.values():
            grouped.setdefault(service.namespace, []).append(service)
        index = snapshot.__dict__["_services_by_namespace"] = {
            ns: tuple(v) for ns, v in grouped.items()
        }
    return tuple(index.get(namespace, ()))


def _slice_owners_of_pod(snapshot: Snapshot, namespace: str, pod_name: str) -> set[str]:
    """Names of the services whose EndpointSlices reference ``pod_name``."""
    owners: set[str] = set()
    for (ns, owner), slices in snapshot._slices_by_service.items():
        if ns != namespace:
            continue
        for eps in slices:
            if any(
                ep.target_ref is not None and ep.target_ref.name == pod_name for ep in eps.endpoints
            ):
                owners.add(owner)
    return owners


def _semantic_tokens(snapshot: Snapshot, key: ResourceKey, resource: Any) -> Iterable[Token]:
    kind = key.kind
    if kind == "Service":
        host = fqdn(key.name, key.namespace)
        yield service_token(host)
        yield endpoints_token(host)
        yield targets_token(ANY_ADDRESS)
    elif kind == "Pod":
        address = pod_ip(resource)
        if address:
            yield targets_token(address)
        labels = resource.metadata.labels
        for service in _services_in(snapshot, key.namespace):
            if service.selector and selects(service.selector, labels):
                yield endpoints_token(service.hostname)
        # EndpointSlices take labels from the Pods they reference by name.
        for owner in _slice_owners_of_pod(snapshot, key.namespace, key.name):
            yield endpoints_token(fqdn(owner, key.namespace))
    elif kind == "EndpointSlice":
        owner = resource.metadata.labels.get("kubernetes.io/service-name")
        if owner:
            yield endpoints_token(fqdn(owner, key.namespace))
        for endpoint in resource.endpoints:
            for address in endpoint.addresses:
                yield targets_token(address)
    elif kind == "VirtualService":
        from controlplane.store.snapshot import resolve_host

        for host in resource.spec.hosts:
            resolved = resolve_host(host, key.namespace)
            yield virtual_services_token(WILDCARD_HOST if "*" in resolved else resolved)
    elif kind == "DestinationRule":
        from controlplane.store.snapshot import resolve_host

        resolved = resolve_host(resource.spec.host, key.namespace)
        yield destination_rules_token(WILDCARD_HOST if "*" in resolved else resolved)
