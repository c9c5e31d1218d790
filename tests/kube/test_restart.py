"""An operator without webhooks: it survives an apiserver restart (watches resume, changes
made meanwhile arrive), and it rejects resources that no webhook refused at the door."""

from __future__ import annotations

import json

import pytest

from controlplane.testing.traffic import count_backends
from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import route_clusters, virtual_service
from tests.kube.operator import OperatorProcess, install_crds


@pytest.fixture(scope="module")
def operator(kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory):
    """An operator without admission webhooks: this test freezes it, and a frozen webhook
    server would (rightly) make the apiserver refuse the changes."""
    install_crds(kube_cluster)
    process = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("op"), webhooks=False)
    try:
        yield process.start()
    finally:
        process.stop()


def envoy_clusters(sidecar) -> set[str]:
    dump = sidecar.envoy.admin_json("/config_dump?resource=dynamic_active_clusters")
    return {c["cluster"]["name"] for c in dump["configs"]}


def service(ns: str, name: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 9080}}]
"""


def test_changes_made_while_the_operator_was_cut_off_arrive_after_an_apiserver_restart(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    ns, sidecar = reviews
    fqdn = f"reviews.{ns}.svc.cluster.local"
    kube_cluster.apply(virtual_service(ns, 90, 10))
    kube_cluster.apply(service(ns, "details"))
    details = f"outbound|9080||details.{ns}.svc.cluster.local"
    operator.wait_for(lambda: details in envoy_clusters(sidecar), what="details cluster")
    before = envoy_clusters(sidecar)

    # The operator is frozen (its watches cannot see anything) while the apiserver restarts
    # and three changes are made: a patch, a new Service and a deleted one.
    operator.pause()
    try:
        kube_cluster.restart_apiserver()
        patch = [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
                 {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100}]  # fmt: skip
        kube_cluster.kubectl(
            "patch", "vs", "reviews", "-n", ns, "--type=json", "-p", json.dumps(patch)
        )
        kube_cluster.apply(service(ns, "ratings"))
        kube_cluster.kubectl("delete", "service", "details", "-n", ns)
    finally:
        operator.resume()

    ratings = f"outbound|9080||ratings.{ns}.svc.cluster.local"
    v2 = f"outbound|9080|v2|{fqdn}"
    operator.wait_for(lambda: route_clusters(sidecar, "reviews") == [v2], timeout=60, what="0/100")

    def updated() -> set[str] | None:
        found = envoy_clusters(sidecar)
        return found if ratings in found and details not in found else None

    clusters = operator.wait_for(
        updated,
        timeout=60,
        what="ratings added and details removed",
    )
    assert before - {details} <= clusters  # nothing else was lost
    assert count_backends(sidecar.outbound_port, "reviews", 100) == {"reviews-v2": 100}
    # The watches really resumed: a change made now arrives too.
    kube_cluster.apply(virtual_service(ns, 100, 0))
    operator.wait_for(
        lambda: route_clusters(sidecar, "reviews") == [f"outbound|9080|v1|{fqdn}"],
        what="100/0 after the restart",
    )


def test_a_resource_stored_while_no_webhook_guarded_the_door_is_marked_rejected(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    # No validating webhook here (this module's operator serves none): the apiserver's schema
    # allows a negative integer, so the resource is stored, and the operator rejects it.
    ns = kube_namespace
    kube_cluster.apply(
        f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
      weight: -5
"""
    )

    def rejected():
        status = kube_cluster.get_json("vs", "reviews", "-n", ns).get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        return conds if conds.get("Accepted", {}).get("status") == "False" else None

    conds = operator.wait_for(rejected, what="Accepted=False")
    assert conds["Accepted"]["reason"] == "InvalidField"
    assert conds["Accepted"]["message"] == "spec.http[0].route[0].weight: must not be negative"
    assert conds["Accepted"]["observedGeneration"] == 1
    assert conds["Reconciled"]["reason"] == "NotAccepted"
    event = operator.wait_for(
        lambda: [
            e
            for e in kube_cluster.get_json("events", "-n", ns)["items"]
            if e["reason"] == "Rejected" and e["involvedObject"]["name"] == "reviews"
        ],
        what="a Rejected event",
    )[0]
    assert "spec.http[0].route[0].weight: must not be negative" in event["message"]
    described = kube_cluster.kubectl("describe", "vs", "reviews", "-n", ns).stdout
    assert "Rejected" in described  # kubectl describe finds the Event by the object's uid
    line = (
        f"[CP0201 InvalidField] VirtualService {ns}/reviews: "
        "spec.http[0].route[0].weight: must not be negative"
    )
    assert operator.log_text().count(line) == 1  # logged once, however many events follow


def test_a_restarted_operator_keeps_serving_the_last_accepted_generation_of_a_refused_resource(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    """Generation 1 (100/0) serves; generation 2 (a negative weight, stored because no
    webhook guards the door here) is refused; the operator restarts and, with nothing in
    memory, still serves generation 1, from the resource's status.lastAccepted."""
    ns, sidecar = reviews
    v1 = f"outbound|9080|v1|reviews.{ns}.svc.cluster.local"
    kube_cluster.apply(virtual_service(ns, 100, 0))
    operator.wait_for(lambda: route_clusters(sidecar, "reviews") == [v1], what="100/0")

    def kept():
        status = kube_cluster.get_json("vs", "reviews", "-n", ns).get("status") or {}
        last = status.get("lastAccepted") or {}
        return last if last.get("generation") == 1 else None

    assert operator.wait_for(kept, what="lastAccepted generation 1")["spec"]["http"]
    kube_cluster.apply(virtual_service(ns, 100, -5))

    def refused():
        status = kube_cluster.get_json("vs", "reviews", "-n", ns).get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        accepted = conds.get("Accepted", {})
        return status if accepted.get("observedGeneration") == 2 else None

    assert (
        operator.wait_for(refused, what="generation 2 refused")["lastAccepted"]["generation"] == 1
    )
    assert count_backends(sidecar.outbound_port, "reviews", 100) == {"reviews-v1": 100}

    operator.stop()
    operator.start()
    operator.debug.wait_synced(sidecar.node_id, timeout=30)
    assert route_clusters(sidecar, "reviews") == [v1]  # before: no VirtualService, both versions
    assert count_backends(sidecar.outbound_port, "reviews", 200) == {"reviews-v1": 200}
    line = (
        f"[CP0110 LastGoodVersionServed] VirtualService {ns}/reviews: "
        "the last accepted generation 1 is served"
    )
    assert line in operator.log_text()
    status = operator.wait_for(refused, what="status after the restart")
    assert status["conditions"][0]["status"] == "False"
    messages = [m["description"] for m in status["validationMessages"]]
    assert "the last accepted generation 1 is served" in messages, messages
    assert status["lastAccepted"]["generation"] == 1
