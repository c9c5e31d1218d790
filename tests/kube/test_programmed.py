"""The Programmed condition on the cluster (issue 17): written by the leader once the proxies
ACKed, read by `kubectl wait --for=condition=Programmed` and `controlplane wait --kube`; a
NACK shows on the VirtualService that produced it, with Envoy's message and an Event."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import route_clusters, virtual_service
from tests.kube.operator import OperatorProcess
from tests.support import meshes

HUGE_REGEX = "/(" + "|".join(f"item{i}" for i in range(60)) + "){1,20}"


def programmed(cluster: LocalCluster, ns: str) -> tuple[int, dict]:
    obj = cluster.get_json("virtualservice", "reviews", "-n", ns)
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == "Programmed":
            return obj["metadata"]["generation"], cond
    return obj["metadata"]["generation"], {}


def kubectl_wait(cluster: LocalCluster, ns: str, timeout: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            cluster.kubectl_path,
            "--kubeconfig",
            cluster.kubeconfig,
            "wait",
            "--for=condition=Programmed",
            "virtualservice/reviews",
            "-n",
            ns,
            f"--timeout={timeout}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kubectl_wait_for_programmed_returns_after_the_ack_and_a_nack_is_on_the_resource(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    ns, sidecar = reviews
    fqdn = f"reviews.{ns}.svc.cluster.local"
    kube_cluster.apply(virtual_service(ns, 50, 50))
    done = kubectl_wait(kube_cluster, ns, "30s")
    assert done.returncode == 0, done.stderr
    # When kubectl wait returned, the sidecar had the route (it ACKed it).
    assert route_clusters(sidecar, "reviews") == [
        f"outbound|9080|v1|{fqdn}",
        f"outbound|9080|v2|{fqdn}",
    ]
    generation, cond = programmed(kube_cluster, ns)
    assert cond["status"] == "True" and cond["observedGeneration"] == generation == 1
    assert cond["message"] == "1 of 1 proxies on generation 1", cond

    # A weight change: generation 2, Programmed again once ACKed.
    time.sleep(1.5)  # generation 1's status writes are done
    before = operator.debug.get("/debug/syncz")["snapshot_version"]
    kube_cluster.apply(virtual_service(ns, 0, 100))
    done = kubectl_wait(kube_cluster, ns, "30s")
    assert done.returncode == 0, done.stderr
    # The status writes of this step (Accepted/Reconciled at generation 2, Programmed) made
    # no snapshot of their own: the change is the only one published, so nothing was pushed
    # because of them.
    time.sleep(1.5)
    assert operator.debug.get("/debug/syncz")["snapshot_version"] == before + 1
    assert route_clusters(sidecar, "reviews") == [f"outbound|9080|v2|{fqdn}"]
    generation, cond = programmed(kube_cluster, ns)
    assert cond["observedGeneration"] == generation == 2, cond

    # A regex Envoy refuses: the NACK is on the VirtualService within 2 s, with the proxy.
    refused = meshes.virtual_service(
        "reviews",
        f"""
        http:
        - match: [{{uri: {{regex: "{HUGE_REGEX}"}}}}]
          route: [{{destination: {{host: reviews, subset: v1}}}}]
        - route: [{{destination: {{host: reviews, subset: v2}}}}]
        """,
        namespace=ns,
    )
    kube_cluster.apply(refused)
    applied = time.time()
    cond = operator.wait_for(
        lambda: (c := programmed(kube_cluster, ns)[1]).get("reason") == "Rejected" and c,
        what="Programmed False, Rejected",
    )
    assert time.time() - applied < 2.5
    assert cond["status"] == "False" and cond["observedGeneration"] == 3
    assert sidecar.node_id in cond["message"] and "program size" in cond["message"], cond
    events = operator.wait_for(
        lambda: [
            e
            for e in kube_cluster.get_json("events", "-n", ns)["items"]
            if e["involvedObject"]["name"] == "reviews" and e["reason"] == "RejectedByProxy"
        ],
        what="a RejectedByProxy event",
    )
    assert events[0]["type"] == "Warning" and "program size" in events[0]["message"]
    # The proxy keeps its last ACKed routes.
    assert route_clusters(sidecar, "reviews") == [f"outbound|9080|v2|{fqdn}"]
    # kubectl wait times out; controlplane wait fails at once with the reason.
    assert kubectl_wait(kube_cluster, ns, "2s").returncode != 0
    started = time.time()
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "wait",
            "VirtualService/reviews",
            "-n",
            ns,
            "--kube",
            "--kubeconfig",
            kube_cluster.kubeconfig,
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and "Rejected" in failed.stderr, failed.stderr
    assert "program size" in failed.stderr and time.time() - started < 10
