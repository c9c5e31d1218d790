"""Small meshes for the protocol tests (backends in 127.0.6.0/24, the scale branch's range)."""

from __future__ import annotations

from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import node
from tests.support import meshes

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"
ROUTE_NAME = "local_15001"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

MESH = meshes.join(meshes.reviews("127.0.6.1", "127.0.6.2"), meshes.ratings("127.0.6.3"))

# The reviews DestinationRule with a traffic policy added: its clusters change, its subsets not.
ROUND_ROBIN_RULE = meshes.subsets(
    "reviews", traffic_policy={"loadBalancer": {"simple": "ROUND_ROBIN"}}
)


def canary(v1: int, v2: int) -> str:
    return meshes.split("reviews", {"v1": v1, "v2": v2})


def ratings_pod(name: str, ip: str) -> str:
    return meshes.pod(name, ip, app="ratings")


def local_node(name: str = "client", port: int = 15001, **extra: str):  # type: ignore[no-untyped-def]
    metadata = {"NAMESPACE": "default", "LOCAL_OUTBOUND_PORT": str(port), **extra}
    return node(f"sidecar~127.0.6.100~{name}.default~default.svc.cluster.local", metadata)
