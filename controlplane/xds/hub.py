"""The hub between the store and the streams: debounces changes, holds the current compiler,
and wakes every connected proxy when a new snapshot is ready.

Streams never decide what a proxy gets; they ask the hub's compiler.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.compile import CompiledResource, ProxyResources, SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.store import ChangeSet, Snapshot, Store

log = logging.getLogger("controlplane.xds")

DEFAULT_DEBOUNCE = 0.1
_FAIL_CLOSED_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy"})
DEFAULT_MAX_DELAY = 10.0


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

    def wake(self) -> None: ...

    def describe(self) -> dict[str, object]: ...


class Hub:
    def __init__(
        self,
        store: Store,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_concurrent_pushes: int = 64,
        authenticator: Authenticator = _trust_the_claim,
    ) -> None:
        self.store = store
        self.debounce = debounce
        self.max_delay = max_delay
        self.compiler = SnapshotCompiler(store.snapshot)
        self.change_seen_at = time.time()
        self.streams: dict[str, Stream] = {}
        self.push_slots = asyncio.Semaphore(max_concurrent_pushes)
        self.pushes = 0
        self.listeners: list[Callable[[str, Stream], None]] = []
        self.authenticator = authenticator
        self.providers: list[ResourceProvider] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Snapshot | None = None
        self._pending_first: float = 0.0  # monotonic time of the first change in a burst
        self._pending_last: float = 0.0
        self._pending_seen_at: float = 0.0  # wall-clock time of the first change in a burst
        self._changed = asyncio.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        store.subscribe(self._on_store_change)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._debounce_loop(), name="xds-debounce")

    async def stop(self) -> None:
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
        with self._lock:
            now = time.monotonic()
            if self._pending is None:
                self._pending_first = now
                self._pending_seen_at = change.at
            self._pending = snapshot
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
                    deadline = min(
                        self._pending_last + self.debounce, self._pending_first + self.max_delay
                    )
                delay = deadline - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._changed.clear()
            with self._lock:
                snapshot, seen_at = self._pending, self._pending_seen_at
                self._pending = None
            if snapshot is not None:
                self.publish(snapshot, seen_at)

    def publish(self, snapshot: Snapshot, seen_at: float | None = None) -> None:
        """Make ``snapshot`` current and wake every stream to send what changed."""
        self.compiler = SnapshotCompiler(snapshot)
        self.change_seen_at = seen_at if seen_at is not None else time.time()
        log.debug("snapshot %d published to %d streams", snapshot.version, len(self.streams))
        for stream in list(self.streams.values()):
            stream.wake()

    # ---- what a proxy gets ---------------------------------------------------------------

    def resources_for(self, proxy: Proxy) -> ProxyResources:
        """The compiler's resources for ``proxy`` plus those of every provider."""
        compiled = self.compiler.compile(proxy)
        if not self.providers:
            return compiled
        merged = {t: dict(r) for t, r in compiled.by_type.items()}
        for provider in self.providers:
            for type_url, extra in provider(proxy).items():
                merged.setdefault(type_url, {}).update(extra)
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
