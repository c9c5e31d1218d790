"""A small ADS client in Python: for protocol tests and the benchmark's simulated proxies.

``AdsConnection`` is one raw stream (send a request, read a response). ``SimulatedProxy``
follows Envoy's subscription order on it (CDS, then EDS for the clusters it got, LDS, then
RDS for the route names its listeners use), ACKs every response and timestamps each one.
It is a harness (used by ``tests/xds`` and ``bench/loadgen.py``), so it lives beside the other
harnesses, not in ``controlplane.xds``, which only serves.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from controlplane.compile.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    VIRTUAL_HOST,
    WILDCARD_TYPES,
)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def node(node_id: str, metadata: Mapping[str, Any] | None = None) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update(dict(metadata or {}))
    return base_pb2.Node(id=node_id, cluster="bench", metadata=meta)


class AdsConnection:
    """One ADS stream over its own channel (like one Envoy's connection)."""

    def __init__(
        self,
        target: str,
        delta: bool = False,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.delta = delta
        # Extra gRPC channel options (e.g. a short reconnect backoff for a probe that times
        # a control plane's start), after the defaults.
        self.options = [*CHANNEL_OPTIONS, *options]
        self.channel: grpc.aio.Channel | None = None
        self.call: Any = None

    async def open(self) -> AdsConnection:
        self.channel = grpc.aio.insecure_channel(self.target, options=self.options)
        # Responses arrive as bytes and are parsed here, so that their size is known
        # without re-encoding them (ByteSize() of a large message costs more than parsing).
        method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        request = (
            discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        )
        self._response_type = (
            discovery_pb2.DeltaDiscoveryResponse if self.delta else discovery_pb2.DiscoveryResponse
        )
        self.call = self.channel.stream_stream(
            f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}",
            request_serializer=request.SerializeToString,
            response_deserializer=None,
        )(wait_for_ready=True)  # like Envoy: keep trying to connect rather than fail at once
        self.last_size = 0
        # One reader owns call.read(): cancelling a pending read would cancel the whole call,
        # so a timed-out recv() waits on the queue instead.
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        try:
            while True:
                response = await self.call.read()
                await self._responses.put(response)
                if response is grpc.aio.EOF:
                    return
        except (asyncio.CancelledError, grpc.aio.AioRpcError) as exc:
            await self._responses.put(exc)

    async def send(self, request: Any) -> None:
        await self.call.write(request)

    async def recv(self, timeout: float | None = 10.0) -> Any:
        """The next response (raises TimeoutError, or EOFError when the stream ended)."""
        response = await asyncio.wait_for(self._responses.get(), timeout)
        if response is grpc.aio.EOF or isinstance(response, BaseException):
            self._responses.put_nowait(response)  # every later recv() sees the end too
            raise EOFError(f"stream ended: {response!r}")
        self.last_size = len(response)
        return self._response_type.FromString(response)

    async def expect_nothing(self, within: float) -> None:
        """Fail if a response arrives within ``within`` seconds."""
        try:
            response = await self.recv(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {response.type_url} nonce {response.nonce}")

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self._reader.cancel()
        if self.channel is not None:
            await self.channel.close()

    async def __aenter__(self) -> AdsConnection:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def sotw_request(
    type_url: str,
    names: Iterable[str] = (),
    *,
    version: str = "",
    nonce: str = "",
    node_message: base_pb2.Node | None = None,
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=list(names),
        version_info=version,
        response_nonce=nonce,
    )
    if node_message is not None:
        request.node.CopyFrom(node_message)
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def delta_request(
    type_url: str,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    *,
    nonce: str = "",
    initial: Mapping[str, str] | None = None,
    node_message: base_pb2.Node | None = None,
    error: str | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=dict(initial or {}),
    )
    if node_message is not None:
        request.node.CopyFrom(node_message)
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def cluster_eds_names(resources: Iterable[Any], names: Iterable[str] | None = None) -> list[str]:
    """The EDS service names of the EDS clusters among ``resources`` (Any messages).

    With ``names`` (Delta's resource names, in the same order), clusters named
    ``outbound|...`` are taken as EDS clusters of that name without decoding them: the
    compiler builds every outbound cluster that way, and decoding thousands of clusters per
    simulated proxy would make the load generator, not the control plane, the bottleneck.
    """
    out = []
    if names is not None:
        rest = []
        for name, any_message in zip(names, resources, strict=True):
            if name.startswith("outbound|"):
                out.append(sys.intern(name))
            else:
                rest.append(any_message)
        return out + cluster_eds_names(rest)
    for any_message in resources:
        cluster = cluster_pb2.Cluster()
        any_message.Unpack(cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            out.append(sys.intern(cluster.eds_cluster_config.service_name or cluster.name))
    return out


def virtual_host_clusters(resources: Iterable[Any]) -> set[str]:
    """The clusters the routes of VHDS virtual hosts (Delta ``Resource`` messages) lead to."""
    out: set[str] = set()
    for resource in resources:
        if not resource.HasField("resource"):
            continue  # an alias nothing matched, or a namespace's placeholder
        host = route_components_pb2.VirtualHost()
        resource.resource.Unpack(host)
        for route in host.routes:
            if route.route.cluster:
                out.add(route.route.cluster)
            out.update(c.name for c in route.route.weighted_clusters.clusters)
    return out


def listener_route_names(resources: Iterable[Any]) -> list[str]:
    """The RDS route configuration names the listeners' HTTP connection managers use."""
    out: set[str] = set()
    for any_message in resources:
        listener = listener_pb2.Listener()
        any_message.Unpack(listener)
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    manager = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(manager)
                    if manager.HasField("rds"):
                        out.add(manager.rds.route_config_name)
    return sorted(out)


@dataclass
class Received:
    """One response as the simulated proxy saw it."""

    type_url: str
    at: float  # wall clock, when read
    resources: int
    removed: int
    size: int
    version: str


@dataclass
class SimulatedProxy:
    """Speaks ADS like an Envoy sidecar: subscribes in Envoy's order and ACKs everything.

    ``on_response`` is called with each ``Received``; ``nack_when`` may return an error
    message to NACK a response instead of ACKing it.
    """

    target: str
    node_id: str
    metadata: Mapping[str, Any]
    delta: bool = False
    on_response: Callable[[SimulatedProxy, Received, Any], None] | None = None
    nack_when: Callable[[Any], str | None] | None = None
    connection: AdsConnection | None = None
    names: dict[str, set[str]] = field(default_factory=dict)  # type -> subscribed names
    have: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> name -> version
    versions: dict[str, str] = field(default_factory=dict)  # type -> last ACKed version
    first_full_at: float = 0.0  # when CDS, EDS, LDS and RDS had all been received
    received: int = 0
    received_bytes: int = 0
    disconnects: list[str] = field(default_factory=list)
    # On-demand mode (node metadata ON_DEMAND): the Hosts (``host:port``) it calls once its
    # route configurations arrive, as Envoy's on-demand filter would ask for them (VHDS),
    # then the clusters their routes name (on-demand CDS).
    calls: tuple[str, ...] = ()
    on_demand_clusters: set[str] = field(default_factory=set)

    async def run(self, stop: asyncio.Event | None = None, reconnect: bool = False) -> None:
        """Follow the control plane until ``stop``; with ``reconnect``, come back after a lost
        stream as Envoy does (after a short backoff, Delta declaring what it has)."""
        while True:
            try:
                await self._stream(stop)
                return
            except (EOFError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                # InvalidStateError: the call failed (e.g. could not connect) before a write.
                if not reconnect or (stop is not None and stop.is_set()):
                    raise
                self.disconnects.append(f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.5 + random.random())

    async def _stream(self, stop: asyncio.Event | None) -> None:
        self.connection = await AdsConnection(self.target, self.delta).open()
        self.names = {}
        me = node(self.node_id, self.metadata)
        try:
            # Envoy names its on-demand clusters next to the wildcard when it reconnects.
            named = sorted(self.on_demand_clusters)
            await self._subscribe(CLUSTER, ["*", *named] if named else [], me)
            await self._subscribe(LISTENER, [], None)
            while stop is None or not stop.is_set():
                response = await self.connection.recv(None)  # EOFError: the stream was lost
                await self._on(response)
        finally:
            await self.connection.close()

    async def _subscribe(
        self, type_url: str, names: list[str], me: base_pb2.Node | None, nonce: str = ""
    ) -> None:
        assert self.connection is not None
        self.names[type_url] = set(names)
        if self.delta:
            initial = self.have.get(type_url) or None
            await self.connection.send(
                delta_request(type_url, names, nonce=nonce, node_message=me, initial=initial)
            )
        else:
            await self.connection.send(
                sotw_request(
                    type_url,
                    names,
                    version=self.versions.get(type_url, ""),
                    nonce=nonce,
                    node_message=me,
                )
            )

    async def _on(self, response: Any) -> None:
        assert self.connection is not None
        now = time.time()
        type_url = response.type_url
        size = self.connection.last_size
        self.received += 1
        self.received_bytes += size
        have = self.have.setdefault(type_url, {})
        if self.delta:
            for r in response.resources:
                # Interned: thousands of simulated proxies hold the same names and versions.
                have[sys.intern(r.name)] = sys.intern(r.version)
            for name in response.removed_resources:
                have.pop(name, None)
            removed = len(response.removed_resources)
            version = response.system_version_info
            anys = [r.resource for r in response.resources]
        else:
            if type_url in WILDCARD_TYPES:
                have.clear()
            removed = 0
            version = response.version_info
            anys = list(response.resources)
            have["*"] = version
        error = self.nack_when(response) if self.nack_when else None
        received = Received(type_url, now, len(anys), removed, size, version)
        if self.on_response is not None:
            self.on_response(self, received, response)
        if error is None:
            self.versions[type_url] = version
        # Follow-up subscriptions, as Envoy makes them.
        follow: list[tuple[str, list[str]]] = []
        if type_url == CLUSTER and error is None:
            names = cluster_eds_names(
                anys, [r.name for r in response.resources] if self.delta else None
            )
            if self.delta:
                new = sorted(set(names) - self.names.get(ENDPOINT, set()))
                if new or ENDPOINT not in self.names:
                    follow.append((ENDPOINT, new))
            elif set(names) != self.names.get(ENDPOINT):
                follow.append((ENDPOINT, sorted(names)))
        if type_url == LISTENER and error is None:
            routes = listener_route_names(anys)
            if set(routes) != self.names.get(ROUTE):
                follow.append((ROUTE, routes))
        if self.calls and self.delta and error is None:
            follow.extend(self._on_demand(type_url, response))
        if self.delta:
            await self.connection.send(delta_request(type_url, nonce=response.nonce, error=error))
        else:
            await self.connection.send(
                sotw_request(
                    type_url,
                    sorted(self.names.get(type_url, ())),
                    version=self.versions.get(type_url, ""),
                    nonce=response.nonce,
                    error=error,
                )
            )
        for follow_type, names in follow:
            if self.delta and follow_type in self.names:
                self.names[follow_type].update(names)
                await self.connection.send(delta_request(follow_type, names))
            elif self.delta:
                await self._subscribe(follow_type, names, None)
            else:
                await self._subscribe(follow_type, names, None)
        if not self.first_full_at and self._complete():
            self.first_full_at = now

    def _aliases(self) -> set[str]:
        return {f"{rc}/{host}" for rc in self.names.get(ROUTE, ()) for host in self.calls}

    def _complete(self) -> bool:
        """Full-table: every type arrived. On demand: also every host it called, and the
        endpoints of the clusters those hosts' routes lead to."""
        if not all(t in self.have for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)):
            return False
        if not self.calls:
            return True
        hosts = self.have.get(VIRTUAL_HOST, {})
        return bool(self.names.get(ROUTE)) and all(a in hosts for a in self._aliases())

    def _on_demand(self, type_url: str, response: Any) -> list[tuple[str, list[str]]]:
        """What Envoy's on-demand filter asks for after ``response``: the called hosts once
        route configurations arrived, then the clusters of their routes."""
        if type_url == ROUTE and VIRTUAL_HOST not in self.names:
            return [(VIRTUAL_HOST, sorted(self._aliases()))]
        if type_url == VIRTUAL_HOST:
            new = virtual_host_clusters(response.resources) - self.on_demand_clusters
            if new:
                self.on_demand_clusters |= new
                return [(CLUSTER, sorted(new))]
        return []
