"""What SotW and Delta ADS streams share: identifying the proxy, the wake/push loop, bounded
concurrent writes, accounting.

A reader task consumes requests; the stream's own coroutine writes. Nothing is queued per
change: when woken, the stream compares what the proxy should have with what it was sent and
writes only the difference. A proxy that stops reading therefore holds up only its own stream
(and gives its push slot back after ``PushLimits.slow_write_after``), and gets the newest
state when it drains.

Contract of a stream: it serves one proxy, identified and authenticated by its first
request (``Delivery.authenticator``); from then on it holds one ``Watch`` on the server's
cache, which wakes it when the proxy's resources may have changed. It is woken, too, by a
request that changes what must be sent (a new subscription, a NACK to answer). Woken, it
asks the watch for each subscribed type, in ``PUSH_ORDER``, and writes what the proxy lacks;
it never builds a resource. Its per-type state (``state.py``) is the only record of what the
proxy was sent and ACKed (read by CSDS and the debug port). When the proxy goes, the watch is
cancelled and the stream leaves the registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import json_format

from controlplane.api.text import LOG_LIMIT, printable
from controlplane.cache.interface import (
    PUSH_ORDER,
    CompiledResource,
    InvalidNode,
    Proxy,
    ResourceMap,
    Watch,
    proxy_from_node,
)
from controlplane.xds.delivery import Delivery
from controlplane.xds.identity import IdentityRejected, StreamInfo
from controlplane.xds.state import Nack, PushError, TypeState, short

log = logging.getLogger("controlplane.xds")
_stream_ids = itertools.count(1)
KNOWN_TYPES = frozenset(PUSH_ORDER)
_NAMES_IN_LOG = 5
_MAX_TYPE_URL = 512  # longer than any real type URL: counted, not echoed back


def proxy_from_request_node(node: Any) -> Proxy:
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    locality = ""
    if node.HasField("locality"):
        locality = "/".join(x for x in (node.locality.region, node.locality.zone) if x)
    return proxy_from_node(node.id, metadata, locality)


class BaseStream(ABC):
    protocol = ""

    def __init__(self, delivery: Delivery, info: StreamInfo, context: Any = None) -> None:
        self.delivery = delivery
        self.id = f"{next(_stream_ids)}"
        self.info = info
        self.peer = info.peer
        self.context = context
        self.proxy: Proxy | None = None
        self.node: Any = None  # the Envoy Node message, for CSDS
        self.watch: Watch | None = None  # on the cache, once the proxy is identified
        self.connected_at = time.time()
        self.states: dict[str, TypeState] = {}
        self._wake = asyncio.Event()
        self._queued = False
        self.writing = False  # a write is waiting for the proxy to read
        self._closed = False
        self._unknown_seen = 0  # requests for types we do not serve
        self._pushed_types: set[str] = set()  # types in the push being written
        self._unknown_answers: list[str] = []  # their type URLs, to answer on the next push

    def wake(self) -> None:
        if not self._queued:
            self._queued = True
            self.delivery.queued += 1
        self._wake.set()

    def _dequeue(self) -> None:
        if self._queued:
            self._queued = False
            self.delivery.queued -= 1

    def next_nonce(self) -> str:
        return self.delivery.next_nonce()

    def _encoded(
        self,
        state: TypeState,
        key: tuple[object, ...],
        resources: list[CompiledResource],
        encode: Callable[[str], bytes],
    ) -> tuple[str, bytes]:
        """The nonce and bytes of a response: shared with every stream sent the same
        response (``key`` names its ``resources`` by identity), unless this stream already
        holds that nonce."""
        responses = self.delivery.responses
        key = (*key, *map(id, resources))
        found = responses.get(key)
        if found is not None and found[0] != state.sent_nonce and found[0] not in state.pending:
            self.delivery.metrics.shared_responses.inc(short(state.type_url))
            return found
        nonce = self.next_nonce()
        response = encode(nonce)
        responses.put(key, resources, nonce, response)
        return nonce, response

    # ---- the stream ---------------------------------------------------------------------

    async def run(self, requests: AsyncIterator[Any]) -> None:
        """Serve the stream until the proxy goes away; responses go out via ``context``."""
        reader = asyncio.create_task(self._read(requests), name=f"xds-read-{self.id}")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._dequeue()
                if self._closed:
                    break
                if self.proxy is None:
                    continue
                await self._push()
        finally:
            reader.cancel()
            self._dequeue()
            if self.watch is not None:
                self.watch.cancel()
            self.delivery.unregister(self)

    async def _push(self) -> None:
        delivery = self.delivery
        await delivery.push_slots.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                delivery.push_slots.release()

        timer: asyncio.TimerHandle | None = None
        try:
            started = time.perf_counter()
            self._pushed_types = set()
            try:
                responses = self._answer_unknown() + self._responses()
            except Exception as exc:
                delivery.metrics.istio.push_context_errors.inc()
                # A compiler bug must not cut the proxy off: it keeps its last config and
                # gets the next snapshot. Until then it is not being updated, and
                # proxy-status and CSDS say so (ERROR, with the reason), never SYNCED.
                log.exception("compiling for proxy %s failed", printable(self.node_id))
                error = PushError(
                    f"compiling this proxy's configuration failed: "
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    time.time(),
                )
                for state in self.states.values():
                    if state.subscribed:
                        state.push_error = error
                return
            for state in self.states.values():
                state.push_error = None
            if not responses:
                return
            # A write still waiting after slow_write_after gives the slot back; a timer is
            # far cheaper per push than a task and asyncio.wait.
            timer = asyncio.get_running_loop().call_later(delivery.limits.slow_write_after, release)
            await self._write(responses)
            elapsed = time.perf_counter() - started
            delivery.metrics.push_time.observe(elapsed)
            for kind in self._pushed_types:
                delivery.metrics.istio.push_time.observe(elapsed, kind)
        finally:
            if timer is not None:
                timer.cancel()
            release()

    async def _write(self, responses: list[bytes]) -> None:
        self.writing = True
        try:
            for response in responses:
                await self.context.write(response)
        except Exception:
            # istiod's send errors: pilot_xds_pushes{type="<type>_senderr"}
            for kind in self._pushed_types:
                self.delivery.metrics.istio.pushes.inc(f"{kind}_senderr")
            raise
        finally:
            self.writing = False

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                if self.proxy is None and not self._identify(request):
                    break
                if self._handle(request):
                    self.wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken client must not take the server down
            log.debug("stream %s: read ended: %s", self.id, printable(exc))
        finally:
            self._closed = True
            self._wake.set()

    def _identify(self, request: Any) -> bool:
        if not request.node.id:
            log.warning(
                "stream %s from %s: first request has no node id; closing", self.id, self.peer
            )
            return False
        try:
            claimed = proxy_from_request_node(request.node)
            self.proxy = self.delivery.authenticator(claimed, self.info)
        except (InvalidNode, IdentityRejected) as exc:
            log.warning(
                "stream %s from %s: %s; closing", self.id, self.peer, printable(exc, 2 * LOG_LIMIT)
            )
            return False
        if self.proxy.on_demand and self.protocol != "delta":
            # VHDS exists only in Delta xDS: a State-of-the-World proxy gets the full table.
            log.warning(
                "proxy %s asked for on-demand delivery (ON_DEMAND) over State-of-the-World "
                "xDS, which cannot carry it; it gets the full table (use Delta xDS)",
                printable(self.proxy.node_id),
            )
            self.proxy = dataclasses.replace(self.proxy, on_demand=False)
        self.node = request.node
        self.watch = self.delivery.cache.watch(self.proxy, self.wake)
        self.delivery.register(self)
        log.info(
            "proxy %s connected (%s, %s)", printable(self.proxy.node_id), self.protocol, self.peer
        )
        return True

    # ---- for subclasses --------------------------------------------------------------------

    def _type_state(self, type_url: str, nonce: str = "") -> tuple[TypeState, bool] | None:
        """The state of ``type_url`` on this stream and whether it is new; None for a type
        this server does not serve (answered by ``_unknown_type``)."""
        if type_url not in KNOWN_TYPES:
            self._unknown_type(type_url, nonce)
            return None
        state = self.states.get(type_url)
        if state is None:
            state = self.states[type_url] = TypeState(type_url)
            return state, True
        return state, False

    def _unknown_type(self, type_url: str, nonce: str) -> None:
        """A request for a type this server does not serve is counted and answered, as
        istiod answers it (its default generator finds no resource of that type): with an
        empty response of that type, so the client stops waiting. Its ACK (a request with
        our nonce) is not answered again; nor is a type URL too long to be one."""
        metrics = self.delivery.metrics
        metrics.unknown_types.inc(self.protocol)
        first = not self._unknown_seen
        self._unknown_seen += 1
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "proxy %s asked for type %s, which this control plane does not serve; "
            "answered with no resources",
            printable(self.node_id),
            printable(type_url),
        )
        if nonce or len(type_url) > _MAX_TYPE_URL or len(self._unknown_answers) >= 16:
            return
        self._unknown_answers.append(type_url)
        self.wake()

    def _answer_unknown(self) -> list[bytes]:
        """The empty responses owed to requests for unknown types (see ``_unknown_type``)."""
        out = []
        for type_url in self._unknown_answers:
            out.append(self._empty_response(type_url, self.next_nonce()))
        self._unknown_answers.clear()
        return out

    @abstractmethod
    def _empty_response(self, type_url: str, nonce: str) -> bytes:
        """An encoded response of ``type_url`` with no resources."""

    @abstractmethod
    def _handle(self, request: Any) -> bool:
        """Update state from one request; return True when something must be sent."""

    @abstractmethod
    def _responses(self) -> list[bytes]:
        """Encoded responses to write now (see ``wire``)."""

    def _current_resources(self) -> dict[str, ResourceMap]:
        """What the proxy should have now of each type it subscribed to, asked of the cache
        before any state moves (a cache that fails leaves the stream as it was)."""
        watch = self.watch
        assert watch is not None
        return {t: watch.resources(t) for t, s in self.states.items() if s.subscribed}

    def _change_seen_at(self) -> float:
        """When the change behind a push now was seen (0: the push is the initial one)."""
        seen = self.delivery.cache.change_seen_at
        return seen if seen > self.connected_at else 0.0

    def _acked(self, state: TypeState, version: str, change_seen_at: float) -> None:
        now = time.time()
        state.acked_version = version
        state.acked_at = now
        self.delivery.progressed()
        if change_seen_at:
            self.delivery.metrics.convergence.observe(
                max(0.0, now - change_seen_at), short(state.type_url)
            )
            self.delivery.metrics.istio.convergence.observe(max(0.0, now - change_seen_at))

    def _report_nack(self, state: TypeState, nack: Nack) -> None:
        """Record a NACK; log it once (a proxy rejecting the same version again, as a
        misbehaving one may do in a loop, is logged at debug level only)."""
        previous = state.nack
        state.nack = nack
        self.delivery.progressed()
        self.delivery.metrics.nacks.inc(short(state.type_url))
        self.delivery.metrics.istio.rejects.inc(short(state.type_url))
        repeated = (
            previous is not None
            and previous.version == nack.version
            and previous.message == nack.message
        )
        names = sorted(nack.resource_names)
        shown = ", ".join(printable(n) for n in names[:_NAMES_IN_LOG]) or "none"
        if len(names) > _NAMES_IN_LOG:
            shown += f" and {len(names) - _NAMES_IN_LOG} more"
        log.log(
            logging.DEBUG if repeated else logging.ERROR,
            "NACK from proxy %s for %s version %s (resources: %s): %s",
            printable(self.node_id),
            short(state.type_url),
            nack.version,
            shown,
            printable(nack.message, 4 * LOG_LIMIT),
        )

    def _count(self, type_url: str, resources: int, size: int) -> None:
        metrics = self.delivery.metrics
        kind = short(type_url)
        metrics.pushes.inc(kind, self.protocol)
        metrics.istio.pushes.inc(kind)
        self._pushed_types.add(kind)
        metrics.sent_resources.inc(kind, amount=resources)
        metrics.sent_bytes.inc(kind, amount=size)
        self.delivery.pushes += 1

    # ---- introspection --------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.proxy.node_id if self.proxy else f"<unidentified {self.peer}>"

    def describe(self) -> dict[str, object]:
        proxy = self.proxy
        identity = None
        if proxy is not None:
            identity = (
                f"spiffe://{proxy.trust_domain}/ns/{proxy.namespace}/sa/{proxy.service_account}"
            )
        return {
            "stream": self.id,
            "protocol": self.protocol,
            "node_id": self.node_id,
            "namespace": proxy.namespace if proxy else None,
            "service_account": proxy.service_account if proxy else None,
            "identity": identity,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "types": {short(t): s.describe() for t, s in self.states.items()},
        }
