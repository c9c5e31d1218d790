"""The compiled-config cache: the compiler's resources for each proxy, shared by shape, kept
current with the store, waking only the proxies a change reaches.

It subscribes to the store; a ``Debouncer`` (``debounce.py``) coalesces bursts of changes
into one ``publish``. The keys a publish changed become dependency tokens
(store/dependencies.py); the next compiler inherits every memoized build they did not touch,
and every proxy shape (``shapes.py``) they did not touch keeps its resources, so the watches
of its proxies are not even woken. It implements ``ConfigCache`` (``interface.py``) for every
type the compiler produces; the xDS server reaches it through a ``CacheMux``.

Contract: between two publishes, ``fetch`` and every watch answer from one snapshot, and
proxies of one shape get the very same maps. After a publish, a watch is woken if and only
if its proxy's shape was invalidated or the proxy no longer fits its shape; maps of a type
whose content did not change are carried over (same objects). Listeners given to
``subscribe`` run at each publish, before any watch is woken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable

from controlplane.api.issues import Codes, ResourceKey
from controlplane.cache.debounce import (
    DEFAULT_DEBOUNCE,
    DEFAULT_ENDPOINT_MAX_DELAY,
    DEFAULT_MAX_DELAY,
    Debouncer,
)
from controlplane.cache.interface import ResourceMap, Wake
from controlplane.cache.metrics import XdsMetrics
from controlplane.cache.shapes import Shape, ShapeCache
from controlplane.compile import ProxyResources, SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.store import ChangeSet, Snapshot, Store
from controlplane.store.dependencies import Token

# Findings that mean "this resource lost to another one" (istiod's conflict gauges).
CONFLICT_CODES = frozenset(
    {
        Codes.CONFLICTING_VIRTUAL_SERVICES,
        Codes.CONFLICTING_GATEWAYS,
        Codes.CONFLICTING_SERVICE_ENTRIES,
        Codes.CONFLICTING_SIDECAR_SELECTORS,
    }
)

log = logging.getLogger("controlplane.xds")

_FAIL_CLOSED_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy"})


class CompiledCache:
    """The compiler's resources for every proxy, by shape; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        endpoint_max_delay: float = DEFAULT_ENDPOINT_MAX_DELAY,
        metrics: XdsMetrics | None = None,
    ) -> None:
        self.store = store
        self.compiler = SnapshotCompiler(store.snapshot)
        self.shapes = ShapeCache()
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.change_seen_at = time.time()
        self.last_publish: dict[str, object] = {}
        self._debouncer = Debouncer(
            self._publish_burst,
            debounce=debounce,
            max_delay=max_delay,
            endpoint_max_delay=endpoint_max_delay,
        )
        self._watches: dict[_ShapeWatch, None] = {}  # ordered set
        self._listeners: list[Callable[[], None]] = []
        self._events_snapshot: Snapshot = store.snapshot
        # What the source loaded before anything served: adds, as istiod's informers count
        # their initial listing.
        for kind, resources in store.snapshot.resources.items():
            for _ in resources:
                self.metrics.istio.store_event(kind, "add")
        self.metrics.gauge(
            "controlplane_xds_proxy_shapes",
            "Distinct compiled resource sets shared by connected proxies.",
            lambda: {(): float(len(self.shapes.shapes))},
        )
        self.metrics.gauge(
            "controlplane_snapshot_version",
            "Version of the snapshot being served.",
            lambda: {(): float(self.snapshot.version)},
        )
        self._register_conflicts()
        store.subscribe(self._on_store_change)

    def _register_conflicts(self) -> None:
        """Resources the snapshot marks as conflicting, by finding: istiod's
        ``pilot_vservice_dup_domain`` (VirtualServices claiming a host another one holds),
        and ours for every conflict finding."""

        def conflicts() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {}
            for key, status in list(self.store.snapshot.status.items()):
                for issue in status.issues:
                    if issue.code in CONFLICT_CODES:
                        label = (issue.code.title, key.kind)
                        out[label] = out.get(label, 0.0) + 1
            return out

        def dup_domains() -> dict[tuple[str, ...], float]:
            title = Codes.CONFLICTING_VIRTUAL_SERVICES.title
            return {(): sum(v for (code, _), v in conflicts().items() if code == title)}

        self.metrics.gauge(
            "controlplane_conflicts",
            "Resources refused or overridden because they conflict with another, by finding "
            "and kind.",
            conflicts,
            ("finding", "kind"),
        )
        self.metrics.istio.gauge(
            "pilot_vservice_dup_domain", "Virtual services with dup domains.", dup_domains
        )

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot being served."""
        return self.compiler.snapshot

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start publishing debounced store changes on the running loop."""
        self._debouncer.start()

    @property
    def running(self) -> bool:
        return self._debouncer.running

    async def stop(self) -> None:
        await self._debouncer.stop()

    # ---- store changes --------------------------------------------------------------------

    def _on_store_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        """Called by the store, possibly from another thread (the Kubernetes watcher)."""
        # A refused security policy changes only statuses, yet the compiler fails closed on it.
        if not change.changed and not any(
            k.kind in _FAIL_CLOSED_KINDS for k in change.status_changed
        ):
            return
        self.metrics.store_changes.inc()
        self._count_events(snapshot, change)
        # Statuses count too: a compile may read them (a refused policy fails closed).
        self._debouncer.add(snapshot, change.changed | change.status_changed, change.at)

    def _count_events(self, snapshot: Snapshot, change: ChangeSet) -> None:
        """istiod's pilot_k8s_reg_events / pilot_k8s_cfg_events: each changed resource as an
        add, an update or a delete, judged against the snapshot the last change left."""
        previous = self._events_snapshot
        self._events_snapshot = snapshot
        istio = self.metrics.istio
        for key in change.changed:
            before = previous.get(key) is not None
            after = snapshot.get(key) is not None
            if before or after:
                event = "update" if before and after else "add" if after else "delete"
                istio.store_event(key.kind, event)

    def flush(self) -> None:
        """Publish the pending burst of changes now, without waiting for the debounce."""
        self._debouncer.flush()

    def _publish_burst(self, snapshot: Snapshot, seen_at: float, keys: set[ResourceKey]) -> None:
        try:
            self.publish(snapshot, seen_at, keys)
        except Exception:
            # The incremental path failed: recompile everything rather than leave every
            # proxy on the previous snapshot.
            self.metrics.istio.push_context_errors.inc()
            log.exception(
                "publishing snapshot %d incrementally failed; recompiling it whole",
                snapshot.version,
            )
            try:
                self.publish(snapshot, seen_at)
            except Exception:
                self.metrics.istio.push_context_errors.inc()
                log.exception("publishing snapshot %d failed", snapshot.version)

    def publish(
        self,
        snapshot: Snapshot,
        seen_at: float | None = None,
        changed: Iterable[ResourceKey] | None = None,
    ) -> None:
        """Make ``snapshot`` current and wake the watches whose resources may have changed.

        With ``changed`` (the keys changed since the current snapshot), only what depends on
        them is recompiled; without it, everything is.
        """
        started = time.perf_counter()
        touched: frozenset[Token] | None = None
        if changed is not None:
            changed = set(changed)
            self.compiler, touched = SnapshotCompiler.following(self.compiler, snapshot, changed)
        else:
            self.compiler = SnapshotCompiler(snapshot)
        self.shapes = self.shapes.next_generation(touched)
        for listener in self._listeners:
            listener()
        self.change_seen_at = seen_at if seen_at is not None else time.time()
        woken = 0
        shapes = self.shapes
        for watch in list(self._watches):
            key = watch.shape_key
            if key not in shapes.shapes or not shapes.still_fits(watch.proxy, key, snapshot):
                watch.wake()
                woken += 1
        elapsed = time.perf_counter() - started
        self.metrics.compile_time.observe(elapsed)
        self.metrics.publishes.inc()
        self.last_publish = {
            "snapshot_version": snapshot.version,
            "changed_keys": None if changed is None else len(changed),
            "tokens": None if touched is None else len(touched),
            "inherited_builds": len(self.compiler.memo_dependencies()),
            "shapes_kept": len(self.shapes.shapes),
            "shapes_invalidated": len(self.shapes.stale),
            "streams_woken": woken,
            "seconds": round(elapsed, 6),
        }
        log.debug("snapshot %d published: %s", snapshot.version, self.last_publish)

    # ---- what a proxy gets (ConfigCache) --------------------------------------------------

    def shape_for(self, proxy: Proxy) -> Shape:
        """The shared compiled resources of ``proxy``'s shape (compiled on first need)."""
        shape = self.shapes.lookup(proxy, self.compiler.snapshot)
        if shape is None:
            shape = self.shapes.build(proxy, self.compiler)
        return shape

    def resources_for(self, proxy: Proxy) -> ProxyResources:
        """Every type of resource the compiler gives ``proxy``."""
        return self.shape_for(proxy).resources

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        return self.shape_for(proxy).resources.of(type_url)

    def watch(self, proxy: Proxy, wake: Wake) -> _ShapeWatch:
        watch = _ShapeWatch(self, proxy, wake)
        self._watches[watch] = None
        return watch

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _forget(self, watch: _ShapeWatch) -> None:
        self._watches.pop(watch, None)


class _ShapeWatch:
    """A proxy's watch on the compiled cache: remembers its shape for the current
    generation, so a push looks the shape up once, not once per type."""

    __slots__ = ("_cache", "_generation", "_shape", "proxy", "shape_key", "wake")

    def __init__(self, cache: CompiledCache, proxy: Proxy, wake: Wake) -> None:
        self._cache = cache
        self.proxy = proxy
        self.wake = wake
        self._generation: ShapeCache | None = None
        self._shape: Shape | None = None
        # The key of the shape last answered from (None: nothing answered yet).
        self.shape_key: Hashable | None = None

    def resources(self, type_url: str) -> ResourceMap:
        cache = self._cache
        shape = self._shape
        if shape is None or self._generation is not cache.shapes:
            shape = self._shape = cache.shape_for(self.proxy)
            self._generation = cache.shapes
            self.shape_key = shape.key
        return shape.resources.of(type_url)

    def cancel(self) -> None:
        self._cache._forget(self)
