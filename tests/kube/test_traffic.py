"""kubectl apply -> operator -> real Envoy: weights set with kubectl split real traffic."""

from __future__ import annotations

import json
import time

from controlplane.testing.traffic import count_backends
from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import route_clusters, virtual_service
from tests.kube.operator import OperatorProcess

REQUESTS = 1000


def share(counts, name: str) -> float:
    total = sum(counts.values())
    return 100.0 * counts[name] / total if total else 0.0


def test_weights_applied_with_kubectl_split_traffic_and_follow_patch_and_delete(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    ns, sidecar = reviews
    fqdn = f"reviews.{ns}.svc.cluster.local"
    v1 = f"outbound|9080|v1|{fqdn}"
    v2 = f"outbound|9080|v2|{fqdn}"

    before = operator.debug.type_state(sidecar.node_id, "rds")["acked_version"]
    kube_cluster.apply(virtual_service(ns, 90, 10))
    operator.wait_for(lambda: route_clusters(sidecar, "reviews") == [v1, v2], what="90/10 route")
    operator.debug.wait_synced(sidecar.node_id, newer_than={"rds": before})
    counts = count_backends(sidecar.outbound_port, "reviews", REQUESTS)
    assert sum(counts.values()) == REQUESTS and set(counts) == {"reviews-v1", "reviews-v2"}
    assert abs(share(counts, "reviews-v1") - 90) <= 4, counts

    # kubectl patch to 50/50: traffic follows.
    patch = [
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50},
    ]
    before = operator.debug.type_state(sidecar.node_id, "rds")["acked_version"]
    started = time.monotonic()
    kube_cluster.kubectl(
        "patch", "virtualservice", "reviews", "-n", ns, "--type=json", "-p", json.dumps(patch)
    )
    operator.debug.wait_synced(sidecar.node_id, types=("rds",), newer_than={"rds": before})
    assert time.monotonic() - started < 5.0  # patch -> Envoy ACK, generous on a shared machine
    counts = count_backends(sidecar.outbound_port, "reviews", REQUESTS)
    assert sum(counts.values()) == REQUESTS
    assert abs(share(counts, "reviews-v1") - 50) <= 6, counts  # 3.8 sigma of a fair coin

    # kubectl delete: back to the service's own cluster, both versions behind it.
    kube_cluster.kubectl("delete", "virtualservice", "reviews", "-n", ns)
    plain = f"outbound|9080||{fqdn}"
    operator.wait_for(lambda: route_clusters(sidecar, "reviews") == [plain], what="plain route")
    counts = count_backends(sidecar.outbound_port, "reviews", 400)
    assert sum(counts.values()) == 400 and set(counts) == {"reviews-v1", "reviews-v2"}, counts
    assert 25 <= share(counts, "reviews-v1") <= 75, counts


def test_a_virtual_service_written_in_an_older_api_version_routes_the_same(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    ns, sidecar = reviews
    fqdn = f"reviews.{ns}.svc.cluster.local"
    kube_cluster.apply(virtual_service(ns, 0, 100, api="v1alpha3"))
    operator.wait_for(
        lambda: route_clusters(sidecar, "reviews") == [f"outbound|9080|v2|{fqdn}"],
        what="route to v2 only",
    )
    counts = count_backends(sidecar.outbound_port, "reviews", 100)
    assert counts == {"reviews-v2": 100}


def endpoint_slice(ns: str, port: int, addresses: list[str]) -> str:
    endpoints = "".join(f"\n- addresses: [{a}]\n  conditions: {{ready: true}}" for a in addresses)
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: details-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: details}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:{endpoints}
"""


def endpoints_of(sidecar, cluster: str) -> set[str]:
    """``ip:port`` of every endpoint Envoy has for ``cluster`` (admin /clusters)."""
    found = set()
    for line in sidecar.envoy.admin("/clusters").splitlines():
        parts = line.split("::")
        if len(parts) >= 3 and parts[0] == cluster and parts[2].startswith("cx_active"):
            found.add(parts[1])
    return found


def test_a_service_without_selector_gets_its_endpoints_from_endpoint_slices(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    # EndpointSlice validation refuses loopback addresses, so no traffic here: the endpoints
    # are read from Envoy's own view of the cluster.
    ns, sidecar = reviews
    cluster = f"outbound|9080||details.{ns}.svc.cluster.local"
    kube_cluster.apply(
        f"""
apiVersion: v1
kind: Service
metadata: {{name: details, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 9080, targetPort: 8080}}]
"""
        + "---"
        + endpoint_slice(ns, 8080, ["10.203.0.1"])
    )
    operator.wait_for(
        lambda: endpoints_of(sidecar, cluster) == {"10.203.0.1:8080"}, what="the slice's endpoint"
    )
    kube_cluster.apply(endpoint_slice(ns, 8080, ["10.203.0.1", "10.203.0.2"]))
    operator.wait_for(
        lambda: endpoints_of(sidecar, cluster) == {"10.203.0.1:8080", "10.203.0.2:8080"},
        what="the second endpoint",
    )
    kube_cluster.kubectl("delete", "endpointslice", "details-1", "-n", ns)
    operator.wait_for(lambda: not endpoints_of(sidecar, cluster), what="no endpoints left")
