"""EDS: the endpoints of one cluster, grouped by locality, subset labels applied."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from controlplane.compile.protos import socket_address, uint32
from controlplane.store.registry import MeshEndpoint, selects

TLS_MODE_METADATA = "envoy.transport_socket_match"


def build_load_assignment(
    cluster_name: str,
    endpoints: Iterable[MeshEndpoint],
    service_port: int,
    subset_labels: Mapping[str, str] | None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints of ``service_port`` (and of the subset, when labels are given), ready only.

    Each locality gets a load_balancing_weight equal to its endpoint count: Envoy ignores it
    unless locality-weighted balancing is on, and gRPC's xDS client needs it to be set.
    """
    by_locality: dict[str, list[endpoint_components_pb2.LbEndpoint]] = defaultdict(list)
    for ep in endpoints:
        if ep.service_port != service_port or not ep.ready:
            continue
        if subset_labels is not None and not selects(subset_labels, ep.labels):
            continue
        by_locality[ep.locality].append(_lb_endpoint(ep))
    groups = []
    for locality in sorted(by_locality):
        members = by_locality[locality]
        region, _, zone = locality.partition("/")
        groups.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=region, zone=zone),
                lb_endpoints=members,
                load_balancing_weight=uint32(len(members)),
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name, endpoints=groups)


def _lb_endpoint(ep: MeshEndpoint) -> endpoint_components_pb2.LbEndpoint:
    metadata = base_pb2.Metadata()
    istio = struct_pb2.Struct()
    istio.update({"workload": f"{ep.workload};{ep.namespace}"})
    metadata.filter_metadata["istio"].CopyFrom(istio)
    if ep.tls_mode == "istio":
        tls = struct_pb2.Struct()
        tls.update({"tlsMode": "istio"})
        metadata.filter_metadata[TLS_MODE_METADATA].CopyFrom(tls)
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(ep.address, ep.port)),
        health_status=health_check_pb2.HEALTHY,
        metadata=metadata,
        load_balancing_weight=uint32(1),
    )
