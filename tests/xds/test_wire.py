"""Responses assembled from pre-encoded entries decode to exactly the intended messages."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.compile import CompiledResource
from controlplane.compile.resources import CLUSTER
from controlplane.xds import wire


def clusters(*names: str) -> list[CompiledResource]:
    return [
        CompiledResource(n, cluster_pb2.Cluster(name=n, type=cluster_pb2.Cluster.EDS))
        for n in names
    ]


def test_sotw_response_decodes_with_every_field_and_resource() -> None:
    resources = clusters("a", "b" * 300)  # a long one: multi-byte lengths
    raw = wire.sotw_response("v1", CLUSTER, "7", resources)
    decoded = discovery_pb2.DiscoveryResponse.FromString(raw)
    assert decoded.version_info == "v1" and decoded.type_url == CLUSTER and decoded.nonce == "7"
    assert [r.type_url for r in decoded.resources] == [CLUSTER, CLUSTER]
    assert [r.value for r in decoded.resources] == [r.value for r in resources]


def test_delta_response_decodes_with_versions_and_removals() -> None:
    resources = clusters("a", "c")
    raw = wire.delta_response("sys", CLUSTER, "9", resources, ["gone", "also-gone"])
    decoded = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
    assert decoded.system_version_info == "sys" and decoded.nonce == "9"
    assert [(r.name, r.version) for r in decoded.resources] == [
        (r.name, r.version) for r in resources
    ]
    assert decoded.resources[0].resource.value == resources[0].value
    assert list(decoded.removed_resources) == ["gone", "also-gone"]
    empty = discovery_pb2.DeltaDiscoveryResponse.FromString(
        wire.delta_response("", CLUSTER, "1", [], [])
    )
    assert not empty.resources and empty.nonce == "1"
