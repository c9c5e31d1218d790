"""Clusters of ServiceEntry hosts whose endpoints the proxy finds itself, as istiod builds
them (pilot/pkg/networking/core/cluster_builder.go): resolution DNS -> STRICT_DNS and
DNS_ROUND_ROBIN -> LOGICAL_DNS, each with its endpoints inline (addresses the proxy resolves);
NONE -> ORIGINAL_DST (the connection's own destination). STATIC hosts stay EDS clusters.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2

from controlplane.api.networking import Subset
from controlplane.compile.endpoints import build_load_assignment
from controlplane.compile.protos import duration
from controlplane.store.registry import MeshEndpoint, MeshService

_DNS_TYPES = {
    "DNS": cluster_pb2.Cluster.STRICT_DNS,
    "DNS_ROUND_ROBIN": cluster_pb2.Cluster.LOGICAL_DNS,
}
# istiod's default mesh dnsRefreshRate; the records' own TTLs are respected below it.
DNS_REFRESH_RATE = 60.0


def uses_eds(service: MeshService) -> bool:
    """Whether the proxy asks EDS for this host's endpoints."""
    return service.resolution not in _DNS_TYPES and service.resolution != "NONE"


def resolve_cluster(
    cluster: cluster_pb2.Cluster,
    service: MeshService,
    service_port: int,
    subset: Subset | None,
    endpoints: Iterable[MeshEndpoint],
) -> None:
    """Turn an EDS cluster of ``service`` into the DNS or ORIGINAL_DST cluster its resolution
    asks for (nothing for STATIC)."""
    if service.resolution == "NONE":
        cluster.ClearField("eds_cluster_config")
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        cluster.ClearField("ring_hash_lb_config")
        cluster.ClearField("maglev_lb_config")
        cluster.ClearField("least_request_lb_config")
        return
    dns_type = _DNS_TYPES.get(service.resolution)
    if dns_type is None:
        return
    cluster.ClearField("eds_cluster_config")
    cluster.type = dns_type
    cluster.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    cluster.respect_dns_ttl = True
    cluster.dns_refresh_rate.CopyFrom(duration(DNS_REFRESH_RATE))
    labels = dict(subset.labels) if subset is not None else None
    assignment = build_load_assignment(cluster.name, endpoints, service_port, labels)
    if dns_type == cluster_pb2.Cluster.LOGICAL_DNS:
        # LOGICAL_DNS takes exactly one endpoint: the first (validation allows at most one).
        first = next((g for g in assignment.endpoints if g.lb_endpoints), None)
        del assignment.endpoints[:]
        if first is not None:
            del first.lb_endpoints[1:]
            assignment.endpoints.append(first)
    cluster.load_assignment.CopyFrom(assignment)
