"""CDS: one EDS cluster per service port, plus one per DestinationRule subset."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.api.networking import Subset, TrafficPolicy
from controlplane.compile.naming import (
    BLACKHOLE_CLUSTER,
    PASSTHROUGH_CLUSTER,
    outbound_cluster_name,
)
from controlplane.compile.protos import ads_source, duration, packed, uint32
from controlplane.store.registry import MeshPort, MeshService
from controlplane.store.snapshot import MergedDestinationRule

DEFAULT_CONNECT_TIMEOUT = 10.0
_MAX = 4294967295
_LB_POLICIES = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
}


def service_clusters(
    service: MeshService, rule: MergedDestinationRule | None
) -> Iterable[cluster_pb2.Cluster]:
    """Every outbound cluster of one service as seen through ``rule``."""
    for port in service.ports:
        if port.protocol == "UDP":
            continue
        policy = rule.traffic_policy if rule else None
        yield build_cluster(
            outbound_cluster_name(port.port, None, service.hostname), port, policy, None
        )
        for subset in rule.subsets if rule else ():
            name = outbound_cluster_name(port.port, subset.name, service.hostname)
            yield build_cluster(name, port, policy, subset)


def build_cluster(
    name: str, port: MeshPort, policy: TrafficPolicy | None, subset: Subset | None
) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name
        ),
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=uint32(_MAX),
                    max_pending_requests=uint32(_MAX),
                    max_requests=uint32(_MAX),
                    max_retries=uint32(_MAX),
                    track_remaining=True,
                )
            ]
        ),
    )
    if port.protocol in ("HTTP2", "GRPC"):
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(packed(options))
    apply_traffic_policy(cluster, port, policy, subset)
    return cluster


def apply_traffic_policy(
    cluster: cluster_pb2.Cluster,
    port: MeshPort,
    policy: TrafficPolicy | None,
    subset: Subset | None,
) -> None:
    """Shape a cluster by the DestinationRule's traffic policy (subset policy wins)."""
    effective = subset.traffic_policy if subset and subset.traffic_policy else policy
    if effective is None or effective.load_balancer is None:
        return
    simple = effective.load_balancer.simple
    if simple in _LB_POLICIES:
        cluster.lb_policy = _LB_POLICIES[simple]


def blackhole_cluster() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=BLACKHOLE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
    )


def passthrough_cluster() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=uint32(_MAX),
                    max_pending_requests=uint32(_MAX),
                    max_requests=uint32(_MAX),
                    max_retries=uint32(_MAX),
                )
            ]
        ),
    )
