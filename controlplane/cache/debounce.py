"""Coalescing bursts of store changes into one publish.

``Debouncer`` knows nothing of what a publish does: it is given a ``publish`` function (the
compiled-config cache's, ``compiled.py``) and calls it with the newest snapshot, when the
first change of the burst was seen and every key the burst changed. A burst ends after a
quiet period (``debounce``) or, at the latest, ``max_delay`` after its first change; a burst
of endpoint changes alone (cheap to push, and continuous in a busy cluster) waits at most
``endpoint_max_delay``.

Changes may arrive from another thread (the Kubernetes watcher); publishing always happens
on the event loop ``start`` was called on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

from controlplane.api.issues import ResourceKey
from controlplane.store import Snapshot

DEFAULT_DEBOUNCE = 0.1
DEFAULT_MAX_DELAY = 10.0
DEFAULT_ENDPOINT_MAX_DELAY = 1.0
ENDPOINT_KINDS = frozenset({"Pod", "EndpointSlice"})

# (the newest snapshot, wall-clock time the burst's first change was seen, keys it changed)
Publish = Callable[[Snapshot, float, set[ResourceKey]], None]


class Debouncer:
    """Holds a pending burst of changes and publishes it when the burst is over."""

    def __init__(
        self,
        publish: Publish,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        endpoint_max_delay: float = DEFAULT_ENDPOINT_MAX_DELAY,
    ) -> None:
        self._publish = publish
        self.debounce = debounce
        self.max_delay = max_delay
        self.endpoint_max_delay = endpoint_max_delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Snapshot | None = None
        self._pending_keys: set[ResourceKey] = set()
        self._pending_first: float = 0.0  # monotonic time of the first change in a burst
        self._pending_last: float = 0.0
        self._pending_seen_at: float = 0.0  # wall-clock time of the first change in a burst
        self._changed = asyncio.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start publishing bursts on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="xds-debounce")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def add(self, snapshot: Snapshot, keys: Iterable[ResourceKey], seen_at: float) -> None:
        """Add a change to the pending burst (from any thread)."""
        with self._lock:
            now = time.monotonic()
            if self._pending is None:
                self._pending_first = now
                self._pending_seen_at = seen_at
            self._pending = snapshot
            self._pending_keys.update(keys)
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

    def deadline(self) -> float:
        """Monotonic time at which the pending burst is to be published."""
        with self._lock:
            longest = self.max_delay
            if all(k.kind in ENDPOINT_KINDS for k in self._pending_keys):
                longest = min(longest, self.endpoint_max_delay)
            return min(self._pending_last + self.debounce, self._pending_first + longest)

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            while True:
                delay = self.deadline() - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self._changed.clear()
            self.flush()

    def flush(self) -> None:
        """Publish the pending burst now, without waiting for the quiet period."""
        with self._lock:
            snapshot, seen_at = self._pending, self._pending_seen_at
            keys, self._pending_keys = self._pending_keys, set()
            self._pending = None
        if snapshot is not None:
            self._publish(snapshot, seen_at, keys)
