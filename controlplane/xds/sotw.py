"""State-of-the-World ADS: one stream per proxy, every type multiplexed on it.

A reader task consumes requests (subscriptions, ACKs, NACKs); the stream's own generator
writes responses. Nothing is queued per change: when woken, the writer compares what the
proxy should have with what it was last sent, per type, and sends only the types whose
version moved. A proxy that stops reading therefore holds up only its own stream, and gets
the newest state when it drains.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from controlplane.compile.proxy import InvalidNode, Proxy, proxy_from_node
from controlplane.compile.resources import CLUSTER, ENDPOINT, PUSH_ORDER
from controlplane.xds.hub import Hub, IdentityRejected, StreamInfo
from controlplane.xds.state import Nack, TypeState, set_version, short

log = logging.getLogger("controlplane.xds")
_stream_ids = itertools.count(1)
KNOWN_TYPES = frozenset(PUSH_ORDER)


def proxy_from_request_node(node: Any) -> Proxy:
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    locality = ""
    if node.HasField("locality"):
        locality = "/".join(x for x in (node.locality.region, node.locality.zone) if x)
    return proxy_from_node(node.id, metadata, locality)


class SotwStream:
    protocol = "sotw"

    def __init__(self, hub: Hub, info: StreamInfo) -> None:
        self.hub = hub
        self.id = f"{next(_stream_ids)}"
        self.info = info
        self.peer = info.peer
        self.proxy: Proxy | None = None
        self.connected_at = time.time()
        self.states: dict[str, TypeState] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._nonces = itertools.count(1)

    def wake(self) -> None:
        self._wake.set()

    # ---- the stream ---------------------------------------------------------------------

    async def run(
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        reader = asyncio.create_task(self._read(requests), name=f"xds-read-{self.id}")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._closed:
                    break
                if self.proxy is None:
                    continue
                async with self.hub.push_slots:
                    try:
                        responses = self._responses()
                    except Exception:
                        # A compiler bug must not cut the proxy off: it keeps its last
                        # config and gets the next snapshot.
                        log.exception("compiling for proxy %s failed", self.node_id)
                        continue
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            self.hub.unregister(self)

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for request in requests:
                if self.proxy is None:
                    if not request.node.id:
                        log.warning(
                            "stream %s from %s: first request has no node id; closing",
                            self.id,
                            self.peer,
                        )
                        break
                    try:
                        claimed = proxy_from_request_node(request.node)
                        self.proxy = self.hub.authenticator(claimed, self.info)
                    except (InvalidNode, IdentityRejected) as exc:
                        log.warning("stream %s from %s: %s; closing", self.id, self.peer, exc)
                        break
                    self.hub.register(self)
                    log.info("proxy %s connected (sotw, %s)", self.proxy.node_id, self.peer)
                if self._handle(request):
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken client must not take the server down
            log.debug("stream %s: read ended: %s", self.id, exc)
        finally:
            self._closed = True
            self._wake.set()

    def _handle(self, request: discovery_pb2.DiscoveryRequest) -> bool:
        """Update state from one request; return True when something must be sent."""
        type_url = request.type_url
        if type_url not in KNOWN_TYPES:
            log.debug("proxy %s asked for unknown type %r; ignored", self.node_id, type_url)
            return False
        state = self.states.get(type_url)
        if state is None:
            state = self.states[type_url] = TypeState(type_url)
        nonce = request.response_nonce
        if not nonce:
            state.subscribe(request.resource_names, initial=True)
            state.force = True
            return True
        if nonce != state.sent_nonce:
            return False  # a reply to an older response: the newer one is on its way
        if request.HasField("error_detail"):
            state.nack = Nack(
                version=state.sent_version,
                nonce=nonce,
                message=request.error_detail.message,
                at=time.time(),
                resource_names=tuple(state.sent_resources),
            )
            log.error(
                "NACK from proxy %s for %s version %s (resources: %s): %s",
                self.node_id,
                short(type_url),
                state.sent_version,
                ", ".join(sorted(state.sent_resources)) or "none",
                request.error_detail.message,
            )
        else:
            state.acked_version = request.version_info
            state.acked_at = time.time()
        return state.subscribe(request.resource_names, initial=False)

    def _responses(self) -> list[discovery_pb2.DiscoveryResponse]:
        assert self.proxy is not None
        resources = self.hub.resources_for(self.proxy)
        out: list[discovery_pb2.DiscoveryResponse] = []
        for type_url in PUSH_ORDER:
            state = self.states.get(type_url)
            if state is None or not state.subscribed:
                continue
            selected = state.select(resources.of(type_url))
            version = set_version(selected)
            if version == state.sent_version and not state.force:
                continue
            changed = {r.name: r.version for r in selected} != {
                n: r.version for n, r in state.sent_resources.items()
            }
            nonce = str(next(self._nonces))
            out.append(
                discovery_pb2.DiscoveryResponse(
                    version_info=version,
                    resources=[r.any for r in selected],
                    type_url=type_url,
                    nonce=nonce,
                )
            )
            state.sent_version = version
            state.sent_nonce = nonce
            state.sent_at = time.time()
            state.sent_resources = {r.name: r for r in selected}
            state.change_seen_at = self.hub.change_seen_at
            state.force = False
            if type_url == CLUSTER and changed:
                # Envoy re-warms changed clusters and waits for their endpoints again.
                eds = self.states.get(ENDPOINT)
                if eds is not None and eds.subscribed:
                    eds.force = True
        self.hub.pushes += len(out)
        return out

    # ---- introspection --------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.proxy.node_id if self.proxy else f"<unidentified {self.peer}>"

    def describe(self) -> dict[str, object]:
        proxy = self.proxy
        return {
            "stream": self.id,
            "protocol": self.protocol,
            "node_id": self.node_id,
            "namespace": proxy.namespace if proxy else None,
            "service_account": proxy.service_account if proxy else None,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "types": {short(t): s.describe() for t, s in self.states.items()},
        }
