"""CDS: one EDS cluster per service port, plus one per DestinationRule subset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2

from controlplane.api.networking import Subset, TrafficPolicy
from controlplane.compile.cluster_policy import (
    DEFAULT_CONNECT_TIMEOUT,
    MAX_UINT32,
    apply_traffic_policy,
    effective_policy,
    use_http2,
)
from controlplane.compile.naming import (
    BLACKHOLE_CLUSTER,
    PASSTHROUGH_CLUSTER,
    outbound_cluster_name,
)
from controlplane.compile.protos import ads_source, duration, uint32
from controlplane.compile.service_entry_clusters import resolve_cluster
from controlplane.store.registry import MeshEndpoint, MeshPort, MeshService
from controlplane.store.snapshot import MergedDestinationRule


def service_clusters(
    service: MeshService,
    rule: MergedDestinationRule | None,
    endpoints: Sequence[MeshEndpoint] = (),
) -> Iterable[cluster_pb2.Cluster]:
    """Every outbound cluster of one service as seen through ``rule`` (``endpoints``: the
    service's, for the hosts whose clusters carry them inline, see
    ``service_entry_clusters``)."""
    for port in service.ports:
        if port.protocol == "UDP":
            continue
        policy = rule.traffic_policy if rule else None
        cluster = build_cluster(
            outbound_cluster_name(port.port, None, service.hostname), port, policy, None
        )
        resolve_cluster(cluster, service, port.port, None, endpoints)
        yield cluster
        for subset in rule.subsets if rule else ():
            name = outbound_cluster_name(port.port, subset.name, service.hostname)
            cluster = build_cluster(name, port, policy, subset)
            resolve_cluster(cluster, service, port.port, subset, endpoints)
            yield cluster


def build_cluster(
    name: str, port: MeshPort, policy: TrafficPolicy | None, subset: Subset | None
) -> cluster_pb2.Cluster:
    """One EDS cluster shaped by the DestinationRule policy that applies to it (see
    ``cluster_policy.effective_policy`` for the precedence)."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name
        ),
    )
    if port.protocol in ("HTTP2", "GRPC"):
        use_http2(cluster)
    apply_traffic_policy(cluster, port, effective_policy(policy, subset, port.port))
    return cluster


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
                    max_connections=uint32(MAX_UINT32),
                    max_pending_requests=uint32(MAX_UINT32),
                    max_requests=uint32(MAX_UINT32),
                    max_retries=uint32(MAX_UINT32),
                )
            ]
        ),
    )
