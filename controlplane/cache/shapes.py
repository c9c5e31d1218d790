"""What proxies share: one compiled resource set per proxy *shape*, one view per subscription,
one version per view and one diff per pair of views.

A proxy's shape is the values of the Proxy fields the compiler actually read for it (found by
compiling once with a proxy that records its attribute reads). Two proxies that agree on
those fields get the same resources, so the second one costs a dictionary lookup, and a
change recompiles each affected shape once, not each proxy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.cache.interface import NOTHING, set_version
from controlplane.compile import (
    SHAPE_DERIVED,
    CompiledResource,
    ProxyResources,
    SnapshotCompiler,
    recording_proxy,
)
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import OnDemandMap
from controlplane.compile.vhds import VirtualHostMap
from controlplane.store.dependencies import Token
from controlplane.store.snapshot import Snapshot

ResourceMap = Mapping[str, CompiledResource]
_EMPTY: ResourceMap = NOTHING
_WILDCARD = "*"  # in a view's memo key: the wildcard part of a subscription


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for a field value (mappings and lists become sorted tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [freeze(v) for v in value]
        return (
            tuple(sorted(items, key=repr)) if isinstance(value, set | frozenset) else tuple(items)
        )
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value  # type: ignore[no-any-return]


def shape_values(proxy: Proxy, spec: tuple[str, ...], snapshot: Snapshot) -> tuple[Hashable, ...]:
    """What identifies ``proxy``'s shape: the values of the fields in ``spec``, or for a field
    the compiler reads only to derive something (``SHAPE_DERIVED``), the derived value."""
    out = []
    for name in spec:
        derive = SHAPE_DERIVED.get(name)
        out.append(freeze(getattr(proxy, name)) if derive is None else derive(snapshot, proxy))
    return tuple(out)


@dataclass
class Shape:
    """The resources of every proxy that agrees on ``key``, and what they depended on."""

    key: Hashable
    resources: ProxyResources
    dependencies: frozenset[Token]
    proxies: int = 0  # streams currently using it


@dataclass
class ShapeCache:
    """Shapes of one snapshot generation."""

    specs: dict[tuple[str, ...], None] = field(default_factory=dict)  # ordered set
    shapes: dict[Hashable, Shape] = field(default_factory=dict)
    # Shapes the last change invalidated: their maps are reused where content is unchanged.
    stale: dict[Hashable, Shape] = field(default_factory=dict)
    builds: int = 0

    def lookup(self, proxy: Proxy, snapshot: Snapshot) -> Shape | None:
        for spec in self.specs:
            key = (spec, shape_values(proxy, spec, snapshot))
            found = self.shapes.get(key)
            if found is not None:
                return found
        return None

    def still_fits(self, proxy: Proxy, key: Hashable, snapshot: Snapshot) -> bool:
        """Whether ``proxy`` still has the shape ``key`` in ``snapshot``: a kept shape stays
        right for its proxies unless a value derived for one of them moved (a Service now
        selects this proxy's address, say), which the shape's own dependencies cannot see."""
        spec = key[0] if isinstance(key, tuple) and key else ()
        if not any(name in SHAPE_DERIVED for name in spec):
            return True
        return (spec, shape_values(proxy, spec, snapshot)) == key

    def build(self, proxy: Proxy, compiler: SnapshotCompiler) -> Shape:
        """Compile ``proxy`` once, recording the snapshot and proxy fields it reads."""
        tracked, reads = recording_proxy(proxy)
        snapshot = compiler.snapshot
        compiler.reads.forget_reads()  # reads made before this compile are not its inputs
        recorder = compiler.reads.start_recording()
        try:
            compiled = compiler.compile(tracked)
        finally:
            compiler.reads.stop_recording(recorder)
        spec = tuple(sorted(reads))
        key = (spec, shape_values(proxy, spec, snapshot))
        resources = self._intern(key, compiled)
        shape = Shape(key, resources, frozenset(recorder.tokens))
        self.specs[spec] = None
        self.shapes[key] = shape
        self.builds += 1
        return shape

    def _intern(self, key: Hashable, compiled: ProxyResources) -> ProxyResources:
        """Reuse the previous generation's map of a type whose content did not change, so
        streams see the very same object and skip that type without comparing."""
        old = self.stale.pop(key, None)
        if old is None:
            return compiled
        by_type: dict[str, ResourceMap] = {}
        for type_url, resources in compiled.by_type.items():
            before = old.resources.of(type_url)
            if _same_content(before, resources):
                by_type[type_url] = before
            else:
                if isinstance(resources, VirtualHostMap) and isinstance(before, VirtualHostMap):
                    resources.inherit(before)
                by_type[type_url] = resources
        return ProxyResources(by_type)

    def next_generation(self, touched: frozenset[Token] | None) -> ShapeCache:
        """The cache for the next snapshot: shapes the change did not touch carry over."""
        nxt = ShapeCache(specs=dict(self.specs))
        for key, shape in self.shapes.items():
            if touched is not None and shape.dependencies.isdisjoint(touched):
                nxt.shapes[key] = shape
            else:
                nxt.stale[key] = shape
        return nxt


def _same_content(a: ResourceMap, b: ResourceMap) -> bool:
    if a is b:
        return True
    if len(a) != len(b):
        return False
    if isinstance(a, OnDemandMap) or isinstance(b, OnDemandMap):
        if not (
            isinstance(a, OnDemandMap)
            and isinstance(b, OnDemandMap)
            and type(a) is type(b)
            and a.eager.keys() == b.eager.keys()
        ):
            return False
    for name, resource in b.items():
        old = a.get(name)
        if old is None:
            return False
        # Built messages are memoized and never changed: the same message is the same content.
        if old is not resource and old.message is not resource.message:
            if old.version != resource.version:
                return False
    return True


@dataclass(frozen=True)
class Diff:
    changed: tuple[str, ...]  # added or with a new version
    removed: tuple[str, ...]


class ViewCache:
    """Per-snapshot memo of subscription views, their versions and diffs between them.

    Keys use object identity; the values keep the objects alive, so an id is not reused
    while its entry exists.
    """

    def __init__(self) -> None:
        self._views: dict[tuple[int, frozenset[str]], tuple[ResourceMap, ResourceMap]] = {}
        self._versions: dict[int, tuple[ResourceMap, str]] = {}
        self._diffs: dict[tuple[int, int], tuple[ResourceMap, ResourceMap, Diff]] = {}

    def clear(self) -> None:
        self._views.clear()
        self._versions.clear()
        self._diffs.clear()

    def view(self, available: ResourceMap, wildcard: bool, names: frozenset[str]) -> ResourceMap:
        """The resources a subscription selects from ``available``, in name order. Of an
        ``OnDemandMap`` a wildcard selects only the eager resources, plus those named."""
        if wildcard:
            if not isinstance(available, OnDemandMap):
                return available
            if not names:
                return available.eager
            return self._eager_and_named(available, names)
        key = (id(available), names)
        found = self._views.get(key)
        if found is not None and found[0] is available:
            return found[1]
        selected = {n: available[n] for n in sorted(names) if n in available}
        view: ResourceMap = selected if selected else _EMPTY
        self._views[key] = (available, view)
        return view

    def _eager_and_named(self, available: OnDemandMap, names: frozenset[str]) -> ResourceMap:
        key = (id(available), names | {_WILDCARD})
        found = self._views.get(key)
        if found is not None and found[0] is available:
            return found[1]
        view = dict(available.eager)
        view.update((n, available[n]) for n in sorted(names) if n in available)
        self._views[key] = (available, view)
        return view

    def version(self, view: ResourceMap) -> str:
        found = self._versions.get(id(view))
        if found is not None and found[0] is view:
            return found[1]
        version = set_version(view[n] for n in sorted(view))
        self._versions[id(view)] = (view, version)
        return version

    def diff(self, old: ResourceMap, new: ResourceMap) -> Diff:
        if old is new:
            return Diff((), ())
        key = (id(old), id(new))
        found = self._diffs.get(key)
        if found is not None and found[0] is old and found[1] is new:
            return found[2]
        changed = []
        for name, resource in new.items():
            before = old.get(name)
            if before is None or (before is not resource and before.version != resource.version):
                changed.append(name)
        removed = tuple(n for n in old if n not in new)
        diff = Diff(tuple(changed), removed)
        self._diffs[key] = (old, new, diff)
        return diff


class ResponseCache:
    """Encoded responses shared by every stream that is sent the same resources in one
    snapshot generation: a canary that sends one 400 KB route table to a thousand proxies
    encodes it once, and each stream writes the very same bytes. Keys name the resources by
    identity, so proxies of different shapes that share a compiled resource (every workload
    of a namespace gets the same outbound route table) share its response too.

    A shared response has one nonce for all its streams (a nonce need only be unique within
    a stream). Entries are kept, newest last, within ``budget`` bytes; ``clear`` drops them
    all.
    """

    def __init__(self, budget: int = 64 << 20) -> None:
        self.budget = budget
        self.size = 0
        self._entries: dict[Hashable, tuple[object, str, bytes]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def get(self, key: Hashable) -> tuple[str, bytes] | None:
        """The nonce and bytes stored for ``key``."""
        found = self._entries.get(key)
        return None if found is None else (found[1], found[2])

    def put(self, key: Hashable, keep: object, nonce: str, response: bytes) -> None:
        """Store a response; ``keep`` holds the objects whose ids ``key`` names, so that no
        id in a stored key can be reused by another object."""
        if len(response) > self.budget:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old[2])
        self._entries[key] = (keep, nonce, response)
        self.size += len(response)
        while self.size > self.budget:
            oldest = next(iter(self._entries))
            self.size -= len(self._entries.pop(oldest)[2])
