"""What every stream of one xDS server shares: the cache it asks, the authenticator, push
slots and limits, nonces, interned subscription names, memoized views and encoded
responses, the registry of connected streams, and the metrics of delivery.

Built by ``server.XdsServer`` from what it was given; streams (``stream.py``) read it and
nobody else writes it. The memos of views and responses are keyed by the identity of the
cache's maps; when the cache announces a new generation (``ConfigCache.subscribe``) they
are dropped, since no stream will ask for the old maps again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controlplane.cache.interface import ConfigCache, Proxy
from controlplane.cache.metrics import XdsMetrics
from controlplane.cache.shapes import ResponseCache, ViewCache
from controlplane.xds import memory
from controlplane.xds.identity import Authenticator, trust_the_claim


@dataclass(frozen=True)
class PushLimits:
    """How much pushing may happen at once."""

    max_concurrent_pushes: int = 64
    # A write still waiting after this long (a proxy that does not read) gives its push
    # slot back, so slow proxies cannot hold up the others.
    slow_write_after: float = 1.0


DEFAULT_LIMITS = PushLimits()


class Stream(Protocol):
    """What the registry needs of a connected proxy stream."""

    id: str
    protocol: str
    proxy: Proxy | None

    def describe(self) -> dict[str, object]: ...


class Delivery:
    """The shared state of one server's streams; see the module docstring."""

    def __init__(
        self,
        cache: ConfigCache,
        *,
        authenticator: Authenticator = trust_the_claim,
        metrics: XdsMetrics | None = None,
        limits: PushLimits = DEFAULT_LIMITS,
    ) -> None:
        self.cache = cache
        self.authenticator = authenticator
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.limits = limits
        self.push_slots = asyncio.Semaphore(limits.max_concurrent_pushes)
        self.streams: dict[str, Stream] = {}
        self.views = ViewCache()
        self.responses = ResponseCache()
        self.pushes = 0
        self.queued = 0  # streams woken and not yet pushed
        self._nonces = itertools.count(1)
        self._names: dict[frozenset[str], frozenset[str]] = {}
        self._trimmer: asyncio.Task[None] | None = None
        # Called (cheaply, without arguments) when a proxy ACKs or NACKs: the Programmed
        # condition (status/programmed.py) re-reads the progress then.
        self.progress_listeners: list[Callable[[], None]] = []
        cache.subscribe(self._new_generation)
        self._register_gauges()

    def _register_gauges(self) -> None:
        def connected() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {("sotw",): 0.0, ("delta",): 0.0}
            for stream in list(self.streams.values()):
                out[(stream.protocol,)] = out.get((stream.protocol,), 0.0) + 1
            return out

        self.metrics.gauge(
            "controlplane_xds_connected_proxies",
            "Proxies with an identified ADS stream, by protocol.",
            connected,
            ("protocol",),
        )

        def by_version() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {}
            for stream in list(self.streams.values()):
                proxy = stream.proxy
                version = str(proxy.metadata.get("ISTIO_VERSION") or "") if proxy else ""
                out[(version or "unknown",)] = out.get((version or "unknown",), 0.0) + 1
            return out

        # istiod's name: connected proxies labelled by the Istio version they report.
        self.metrics.istio.gauge(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS.",
            by_version,
            ("version",),
        )
        self.metrics.gauge(
            "controlplane_xds_push_queue_depth",
            "Streams woken for a push that have not pushed yet.",
            lambda: {(): float(self.queued)},
        )

    def _new_generation(self) -> None:
        self.views.clear()
        self.responses.clear()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._trimmer = asyncio.create_task(self._trim_loop(), name="xds-memory-trim")

    async def stop(self) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()

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

    # ---- shared by streams ----------------------------------------------------------------

    def progressed(self) -> None:
        """A proxy ACKed or NACKed: tell whoever follows the progress."""
        for listener in self.progress_listeners:
            listener()

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

    # ---- streams --------------------------------------------------------------------------

    def register(self, stream: Stream) -> None:
        self.streams[stream.id] = stream

    def unregister(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)

    def describe(self) -> list[dict[str, object]]:
        return [s.describe() for s in list(self.streams.values())]
