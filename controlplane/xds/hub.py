"""The hub between the store and the streams: debounces changes, holds the current compiler,
and wakes the proxies a new snapshot affects.

A burst of store changes is coalesced into one publish. The keys it changed become
dependency tokens (store/dependencies.py); the next compiler inherits every memoized build
they did not touch, and every proxy shape (xds/cache.py) they did not touch keeps its
resources, so its streams are not even woken. Streams never decide what a proxy gets; they
ask the hub.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.api.issues import ResourceKey
from controlplane.compile import CompiledResource, ProxyResources, SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.store import ChangeSet, Snapshot, Store
from controlplane.store.dependencies import Token
from controlplane.xds import memory
from controlplane.xds.cache import ResponseCache, Shape, ShapeCache, ViewCache
from controlplane.xds.metrics import XdsMetrics

log = logging.getLogger("controlplane.xds")

DEFAULT_DEBOUNCE = 0.1
_FAIL_CLOSED_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy"})
DEFAULT_MAX_DELAY = 10.0
# Endpoint changes are cheap to push (only EDS of the affected clusters) and arrive
# continuously in a busy cluster, where a quiet period may never come: a burst of them alone
# waits at most this long.
DEFAULT_ENDPOINT_MAX_DELAY = 1.0
ENDPOINT_KINDS = frozenset({"Pod", "EndpointSlice"})


@dataclass(frozen=True)
class StreamInfo:
    """What the transport knows about a stream: for authenticating the proxy behind it."""

    peer: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # gRPC invocation metadata
    auth_context: Mapping[str, Any] = field(default_factory=dict)  # TLS peer identity, if any


class IdentityRejected(Exception):
    """The stream could not prove the identity its node claims."""


# Turns a claimed proxy into an authenticated one (or raises IdentityRejected).
Authenticator = Callable[[Proxy, StreamInfo], Proxy]
# Adds resources that do not come from the compiler (e.g. SDS secrets from the CA).
ResourceProvider = Callable[[Proxy], Mapping[str, Mapping[str, CompiledResource]]]


def _trust_the_claim(proxy: Proxy, info: StreamInfo) -> Proxy:
    return proxy


class Stream(Protocol):
    """What the hub needs of a connected proxy stream."""

    id: str
    proxy: Proxy | None
    shape_key: object | None

    def wake(self) -> None: ...

    def describe(self) -> dict[str, object]: ...


class Hub:
    def __init__(
        self,
        store: Store,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        endpoint_max_delay: float = DEFAULT_ENDPOINT_MAX_DELAY,
        max_concurrent_pushes: int = 64,
        slow_write_after: float = 1.0,
        authenticator: Authenticator = _trust_the_claim,
    ) -> None:
        self.store = store
        self.debounce = debounce
        self.max_delay = max_delay
        self.endpoint_max_delay = endpoint_max_delay
        self.compiler = SnapshotCompiler(store.snapshot)
        self.change_seen_at = time.time()
        self.streams: dict[str, Stream] = {}
        self.push_slots = asyncio.Semaphore(max_concurrent_pushes)
        # A write still waiting after this long (a proxy that does not read) gives its push
        # slot back, so slow proxies cannot hold up the others.
        self.slow_write_after = slow_write_after
        self.pushes = 0
        self.queued = 0  # streams woken and not yet pushed
        self.listeners: list[Callable[[str, Stream], None]] = []
        self.authenticator = authenticator
        self.providers: list[ResourceProvider] = []
        self.metrics = XdsMetrics()
        self.shapes = ShapeCache()
        self.views = ViewCache()
        self.responses = ResponseCache()
        self._nonces = itertools.count(1)
        self.last_publish: dict[str, object] = {}
        self._names: dict[frozenset[str], frozenset[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Snapshot | None = None
        self._pending_keys: set[ResourceKey] = set()
        self._pending_first: float = 0.0  # monotonic time of the first change in a burst
        self._pending_last: float = 0.0
        self._pending_seen_at: float = 0.0  # wall-clock time of the first change in a burst
        self._changed = asyncio.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._register_gauges()
        store.subscribe(self._on_store_change)

    def _register_gauges(self) -> None:
        def connected() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {("sotw",): 0.0, ("delta",): 0.0}
            for stream in list(self.streams.values()):
                protocol = str(getattr(stream, "protocol", "sotw"))
                out[(protocol,)] = out.get((protocol,), 0.0) + 1
            return out

        self.metrics.gauge(
            "controlplane_xds_connected_proxies",
            "Proxies with an identified ADS stream, by protocol.",
            connected,
            ("protocol",),
        )
        self.metrics.gauge(
            "controlplane_xds_push_queue_depth",
            "Streams woken for a push that have not pushed yet.",
            lambda: {(): float(self.queued)},
        )
        self.metrics.gauge(
            "controlplane_xds_proxy_shapes",
            "Distinct compiled resource sets shared by connected proxies.",
            lambda: {(): float(len(self.shapes.shapes))},
        )
        self.metrics.gauge(
            "controlplane_snapshot_version",
            "Version of the snapshot being served.",
            lambda: {(): float(self.compiler.snapshot.version)},
        )

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._debounce_loop(), name="xds-debounce")
        self._trimmer = asyncio.create_task(self._trim_loop(), name="xds-memory-trim")

    async def _trim_loop(self, every: float = 5.0) -> None:
        """After pushes, once the queue is empty, drop the shared responses, run the full
        garbage collection now rather than during the next wave, and give freed buffers back
        to the system."""
        trimmed_at = self.pushes
        while True:
            await asyncio.sleep(every)
            if self.pushes != trimmed_at and self.queued == 0:
                trimmed_at = self.pushes
                # Shared responses serve a wave of pushes; once it is over they only cost
                # memory (proxies of many shapes could fill the whole budget).
                self.responses.clear()
                memory.settle()
                memory.trim()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # ---- store changes --------------------------------------------------------------------

    def _on_store_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        """Called by the store, possibly from another thread (the Kubernetes watcher)."""
        # A refused security policy changes only statuses, yet the compiler fails closed on it.
        if not change.changed and not any(
            k.kind in _FAIL_CLOSED_KINDS for k in change.status_changed
        ):
            return
        self.metrics.store_changes.inc()
        with self._lock:
            now = time.monotonic()
            if self._pending is None:
                self._pending_first = now
                self._pending_seen_at = change.at
            self._pending = snapshot
            # Statuses count too: a compile may read them (a refused policy fails closed).
            self._pending_keys |= change.changed | change.status_changed
            self._pending_last = now
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._changed.set()
        else:
            loop.call_soon_threadsafe(self._changed.set)

    async def _debounce_loop(self) -> None:
        while True:
            await self._changed.wait()
            while True:
                with self._lock:
                    longest = self.max_delay
                    if all(k.kind in ENDPOINT_KINDS for k in self._pending_keys):
                        longest = min(longest, self.endpoint_max_delay)
                    deadline = min(
                        self._pending_last + self.debounce, self._pending_first + longest
                    )
                delay = deadline - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._changed.clear()
            self.flush()

    def flush(self) -> None:
        """Publish the pending burst of changes now, without waiting for the debounce."""
        with self._lock:
            snapshot, seen_at = self._pending, self._pending_seen_at
            keys, self._pending_keys = self._pending_keys, set()
            self._pending = None
        if snapshot is not None:
            try:
                self.publish(snapshot, seen_at, keys)
            except Exception:
                log.exception("publishing snapshot %d failed", snapshot.version)

    def publish(
        self,
        snapshot: Snapshot,
        seen_at: float | None = None,
        changed: Iterable[ResourceKey] | None = None,
    ) -> None:
        """Make ``snapshot`` current and wake the streams whose resources may have changed.

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
        self.views.clear()
        self.responses.clear()
        self.change_seen_at = seen_at if seen_at is not None else time.time()
        woken = 0
        shapes = self.shapes
        for stream in list(self.streams.values()):
            if (
                self.providers
                or stream.shape_key not in shapes.shapes
                or (
                    stream.proxy is not None
                    and not shapes.still_fits(stream.proxy, stream.shape_key, snapshot)
                )
            ):
                stream.wake()
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

    def next_nonce(self) -> str:
        """A nonce unique across streams, so that one encoded response can serve many."""
        return str(next(self._nonces))

    def canonical_names(self, names: frozenset[str]) -> frozenset[str]:
        """One shared frozenset per distinct subscription: a thousand proxies subscribed to
        the same thousand endpoints hold one set, not a thousand."""
        found = self._names.get(names)
        if found is None:
            if len(self._names) > 50_000:
                self._names.clear()
            found = self._names[names] = names
        return found

    def wake_all(self) -> None:
        """Wake every stream (e.g. a provider's resources changed)."""
        for stream in list(self.streams.values()):
            stream.wake()

    # ---- what a proxy gets ---------------------------------------------------------------

    def shape_for(self, proxy: Proxy) -> Shape:
        """The shared compiled resources of ``proxy``'s shape (compiled on first need)."""
        shape = self.shapes.lookup(proxy, self.compiler.snapshot)
        if shape is None:
            shape = self.shapes.build(proxy, self.compiler)
        return shape

    def resources_for(self, proxy: Proxy) -> ProxyResources:
        """The compiler's resources for ``proxy`` plus those of every provider."""
        return self.with_providers(proxy, self.shape_for(proxy).resources)

    def with_providers(self, proxy: Proxy, compiled: ProxyResources) -> ProxyResources:
        """``compiled`` plus the resources of every provider for ``proxy``."""
        if not self.providers:
            return compiled
        # Only the types a provider adds to are copied: the compiler's maps stay shared.
        merged: dict[str, Mapping[str, CompiledResource]] = dict(compiled.by_type)
        copied: set[str] = set()
        for provider in self.providers:
            for type_url, extra in provider(proxy).items():
                if not extra:
                    continue
                if type_url not in copied:
                    merged[type_url] = dict(merged.get(type_url, {}))
                    copied.add(type_url)
                merged[type_url].update(extra)  # type: ignore[attr-defined]
        return ProxyResources(merged)

    # ---- streams --------------------------------------------------------------------------

    def register(self, stream: Stream) -> None:
        self.streams[stream.id] = stream
        for listener in self.listeners:
            listener("connect", stream)

    def unregister(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            for listener in self.listeners:
                listener("disconnect", stream)

    def describe(self) -> list[dict[str, object]]:
        return [s.describe() for s in list(self.streams.values())]
