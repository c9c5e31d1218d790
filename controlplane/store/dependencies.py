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
from controlplane.store.registry import fqdn, selects

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


class Recorder:
    """The tokens read while a build runs.

    ``window`` holds what was read since the last nested cached build returned: a caller that
    reads an input and passes it into a build (rather than letting the build read it) makes
    that input a dependency of the build.
    """

    __slots__ = ("tokens", "window")

    def __init__(self, seed: Iterable[Token] = ()) -> None:
        self.tokens: set[Token] = set(seed)
        self.window: set[Token] = set()


class Tracker:
    """The stack of active recorders of one snapshot (compilation is single-threaded).

    Outside any recording only the window is kept, so that a top-level caller's reads still
    become dependencies of the build it passes them into.
    """

    __slots__ = ("stack", "window")

    def __init__(self) -> None:
        self.stack: list[Recorder] = []
        self.window: set[Token] = set()

    def read(self, *tokens: Token) -> None:
        stack = self.stack
        if not stack:
            self.window.update(tokens)
            return
        for recorder in stack:
            recorder.tokens.update(tokens)
            recorder.window.update(tokens)

    def read_all(self, tokens: Iterable[Token]) -> None:
        """Tokens of a nested build (hit or miss) become the enclosing builds' tokens too."""
        stack = self.stack
        if not stack:
            self.window.clear()
            return
        for recorder in stack:
            recorder.tokens.update(tokens)
        stack[-1].window.clear()

    def push(self) -> Recorder:
        recorder = Recorder(self.stack[-1].window if self.stack else self.window)
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
            resource = snapshot.get_untracked(key)
            if resource is not None:
                out.update(_semantic_tokens(snapshot, key, resource))
    return frozenset(out)


def _semantic_tokens(snapshot: Snapshot, key: ResourceKey, resource: Any) -> Iterable[Token]:
    kind = key.kind
    if kind == "Service":
        host = fqdn(key.name, key.namespace)
        yield service_token(host)
        yield endpoints_token(host)
    elif kind == "Pod":
        labels = resource.metadata.labels
        for service in snapshot.services_in_untracked(key.namespace):
            if service.selector and selects(service.selector, labels):
                yield endpoints_token(service.hostname)
        # EndpointSlices take labels from the Pods they reference by name.
        for owner in snapshot.slice_owners_of_pod(key.namespace, key.name):
            yield endpoints_token(fqdn(owner, key.namespace))
    elif kind == "EndpointSlice":
        owner = resource.metadata.labels.get("kubernetes.io/service-name")
        if owner:
            yield endpoints_token(fqdn(owner, key.namespace))
    elif kind == "VirtualService":
        from controlplane.store.snapshot import resolve_host

        for host in resource.spec.hosts:
            resolved = resolve_host(host, key.namespace)
            yield virtual_services_token(WILDCARD_HOST if "*" in resolved else resolved)
    elif kind == "DestinationRule":
        from controlplane.store.snapshot import resolve_host

        resolved = resolve_host(resource.spec.host, key.namespace)
        yield destination_rules_token(WILDCARD_HOST if "*" in resolved else resolved)
