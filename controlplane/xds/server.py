"""The gRPC server: ADS in both variants (State of the World and Delta) and CSDS.

Contract of the server: it speaks the xDS protocol and nothing else. It is built with the
cache it asks (a ``ConfigCache``, usually a ``CacheMux``), the authenticator that turns a
node's claim into a proven identity, the metrics it counts into, its push limits and any
further gRPC services to serve on the same port (the CA's CertificateService); nothing is
set on it afterwards. It never builds a resource and never decides who should get what: a
stream asks the cache and is woken by it. ``start`` and ``stop`` cover the gRPC server and
the shared delivery state (``delivery.py``), not the cache, whose owner starts it first and
stops it last.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2_grpc

from controlplane.cache.interface import ConfigCache
from controlplane.cache.metrics import XdsMetrics
from controlplane.xds.csds import ClientStatusService
from controlplane.xds.delivery import DEFAULT_LIMITS, Delivery, PushLimits, Stream
from controlplane.xds.delta import DeltaStream
from controlplane.xds.identity import Authenticator, StreamInfo, trust_the_claim
from controlplane.xds.sotw import SotwStream

log = logging.getLogger("controlplane.xds")


def stream_info(context: Any) -> StreamInfo:
    metadata = {str(k): str(v) for k, v in (context.invocation_metadata() or ())}
    auth = {
        str(k): [bytes(x).decode(errors="replace") for x in v]
        for k, v in (context.auth_context() or {}).items()
    }
    return StreamInfo(peer=context.peer(), metadata=metadata, auth_context=auth)


class PortInUse(OSError):
    """A port this control plane must own cannot be bound (another process holds it)."""


def _why_not(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound, or None when it can (grpc only logs why)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class GrpcService(Protocol):
    """Another service served on the xDS port (e.g. the CA's CertificateService)."""

    def add_to_server(self, server: Any) -> None: ...


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    async def StreamAggregatedResources(  # noqa: N802 (gRPC's name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> None:
        await SotwStream(self.delivery, stream_info(context), context).run(request_iterator)

    async def DeltaAggregatedResources(  # noqa: N802 (gRPC's name)
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> None:
        await DeltaStream(self.delivery, stream_info(context), context).run(request_iterator)


def _pass_bytes(response: Any) -> bytes:
    """Responses arrive already encoded (xds/wire.py); messages are serialized as usual."""
    if isinstance(response, bytes):
        return response
    return bytes(response.SerializeToString())


def _ads_handler(servicer: AggregatedDiscoveryService) -> grpc.GenericRpcHandler:
    """ADS with its usual request decoding and a response encoder that sends bytes as is."""
    return grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                servicer.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_pass_bytes,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                servicer.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_pass_bytes,
            ),
        },
    )


class XdsServer:
    """Owns the grpc.aio server that proxies connect to; see the module docstring."""

    def __init__(
        self,
        cache: ConfigCache,
        *,
        authenticator: Authenticator = trust_the_claim,
        metrics: XdsMetrics | None = None,
        limits: PushLimits = DEFAULT_LIMITS,
        services: Iterable[GrpcService] = (),
    ) -> None:
        self.delivery = Delivery(cache, authenticator=authenticator, metrics=metrics, limits=limits)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_concurrent_streams", 1_000_000),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                # Requests are small: growing receive windows and read buffers per connection
                # (BDP probing) only costs memory, about 20 KB per connected proxy.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.experimental.tcp_read_chunk_size", 8192),
                ("grpc.experimental.tcp_max_read_chunk_size", 16384),
                # grpc sets SO_REUSEPORT by default: a second control plane would bind the
                # same port and the kernel would split proxies between two configurations.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.server.add_generic_rpc_handlers(
            (_ads_handler(AggregatedDiscoveryService(self.delivery)),)
        )
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            ClientStatusService(self.delivery), self.server
        )
        for service in services:
            service.add_to_server(self.server)
        self.port = 0

    @property
    def metrics(self) -> XdsMetrics:
        return self.delivery.metrics

    @property
    def streams(self) -> dict[str, Stream]:
        """The connected, identified streams by id."""
        return self.delivery.streams

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 15010,
        credentials: grpc.ServerCredentials | None = None,
    ) -> int:
        """Listen (with TLS when ``credentials`` are given) and start serving."""
        address = f"{host}:{port}"
        taken = _why_not(host, port) if port else None
        if taken is not None:  # said in one line, before grpc logs its own
            raise PortInUse(f"cannot listen for xDS on {host}:{port}: {taken}")
        try:
            if credentials is not None:
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind": the port is taken, or no such address
            self.port = 0
        if not self.port:
            reason = _why_not(host, port) or "grpc could not bind it"
            raise PortInUse(f"cannot listen for xDS on {host}:{port}: {reason}")
        self.delivery.start()
        await self.server.start()
        log.info("xDS (ADS) listening on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        await self.server.stop(grace)
        await self.delivery.stop()
