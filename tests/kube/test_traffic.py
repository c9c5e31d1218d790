"""kubectl apply -> operator -> real Envoy: weights set with kubectl split real traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controlplane.local.ports import free_port
from controlplane.local.traffic import count_backends
from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import (
    destination_rule,
    service_and_pods,
    set_pod_ip,
    start_backends,
    start_sidecar,
    virtual_service,
)
from tests.kube.operator import OperatorProcess

IPS = {"v1": "127.0.3.11", "v2": "127.0.3.12"}
CLIENT_IP = "127.0.3.10"
REQUESTS = 1000


def share(counts, name: str) -> float:
    total = sum(counts.values())
    return 100.0 * counts[name] / total if total else 0.0


def route_clusters(sidecar, host: str) -> list[str]:
    """The clusters Envoy's route for ``host`` sends to (from its own config dump)."""
    dump = sidecar.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    for config in dump["configs"]:
        for vhost in config["route_config"].get("virtual_hosts", []):
            if host in vhost["domains"]:
                action = vhost["routes"][0]["route"]
                if "weighted_clusters" in action:
                    return [c["name"] for c in action["weighted_clusters"]["clusters"]]
                return [action["cluster"]]
    return []


@pytest.fixture
def reviews(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess, tmp_path: Path
):
    ns = kube_namespace
    port = free_port()
    backends = start_backends(port, IPS)
    kube_cluster.apply(service_and_pods(ns, port, IPS))
    for version, ip in IPS.items():
        set_pod_ip(kube_cluster, ns, f"reviews-{version}", ip)
    set_pod_ip(kube_cluster, ns, "productpage", CLIENT_IP)
    kube_cluster.apply(destination_rule(ns, "v1", "v2"))
    sidecar = start_sidecar(
        operator, ns, "productpage", CLIENT_IP, {"app": "productpage"}, tmp_path
    )
    try:
        yield ns, sidecar
    finally:
        sidecar.envoy.stop()
        for backend in backends:
            backend.stop()


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
    assert abs(share(counts, "reviews-v1") - 50) <= 4, counts

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
