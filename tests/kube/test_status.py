"""Status on the custom resources: Accepted/Reconciled with reasons, observedGeneration, Events."""

from __future__ import annotations

import json

from controlplane.testing.traffic import count_backends
from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import destination_rule, route_clusters, virtual_service
from tests.kube.operator import OperatorProcess


def conditions(cluster: LocalCluster, ns: str, kind: str, name: str) -> dict[str, dict]:
    obj = cluster.get_json(kind, name, "-n", ns)
    status = obj.get("status") or {}
    out = {c["type"]: c for c in status.get("conditions", [])}
    out["_"] = {"generation": obj["metadata"].get("generation"), **status}
    return out


def test_a_route_to_an_undefined_subset_is_accepted_but_not_reconciled_and_says_why(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews
):
    ns, sidecar = reviews
    fqdn = f"reviews.{ns}.svc.cluster.local"
    good = [f"outbound|9080|v1|{fqdn}", f"outbound|9080|v2|{fqdn}"]
    kube_cluster.apply(virtual_service(ns, 50, 50))
    operator.wait_for(lambda: route_clusters(sidecar, "reviews") == good, what="50/50 route")

    def reconciled(value: str, generation: int):
        def check():
            c = conditions(kube_cluster, ns, "virtualservice", "reviews")
            ok = (
                c.get("Reconciled", {}).get("status") == value
                and c["_"].get("observedGeneration") == generation == c["_"]["generation"]
            )
            return c if ok else None

        return check

    c = operator.wait_for(reconciled("True", 1), what="generation 1 reconciled")
    assert c["Accepted"]["status"] == "True" and c["Accepted"]["observedGeneration"] == 1

    # Valid alone, broken in context: the apiserver accepts it (the webhook does not look
    # at other resources), the status says why, and proxies keep the last good routes.
    out = kube_cluster.apply(virtual_service(ns, 50, 50, subset2="v3"))
    assert "configured" in out
    c = operator.wait_for(reconciled("False", 2), what="generation 2 not reconciled")
    assert c["Accepted"]["status"] == "True"
    assert c["Reconciled"]["reason"] == "ReferencedSubsetNotFound"
    assert (
        f"spec.http[0].route[1].destination.subset: subset 'v3' of host {fqdn} is not defined"
        in c["Reconciled"]["message"]
    )
    codes = [m["type"]["code"] for m in c["_"]["validationMessages"]]
    assert "CP0301" in codes
    events = operator.wait_for(
        lambda: [
            e
            for e in kube_cluster.get_json("events", "-n", ns)["items"]
            if e["involvedObject"]["name"] == "reviews" and e["reason"] == "NotReconciled"
        ],
        what="a NotReconciled event",
    )
    assert events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["kind"] == "VirtualService"
    assert events[0]["involvedObject"].get("uid")
    assert "subset 'v3'" in events[0]["message"]
    assert route_clusters(sidecar, "reviews") == good  # the last good version keeps serving
    counts = count_backends(sidecar.outbound_port, "reviews", 100)
    assert set(counts) == {"reviews-v1", "reviews-v2"}, counts

    # Defining the subset brings the waiting version in, and the status follows.
    kube_cluster.apply(destination_rule(ns, "v1", "v2", "v3"))
    c = operator.wait_for(reconciled("True", 2), what="generation 2 reconciled")
    assert c["Reconciled"]["reason"] == "Reconciled"
    operator.wait_for(
        lambda: route_clusters(sidecar, "reviews") == [good[0], f"outbound|9080|v3|{fqdn}"],
        what="the v3 route",
    )


def test_a_new_resource_that_is_broken_in_context_is_stored_and_marked(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    ns = kube_namespace
    kube_cluster.apply(
        f"""
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: {ns}}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings, port: {{number: 8080}}}}}}]
"""
    )

    def verdict():
        c = conditions(kube_cluster, ns, "virtualservice", "ratings")
        return c if c.get("Reconciled", {}).get("status") == "False" else None

    c = operator.wait_for(verdict, what="ratings not reconciled")
    assert c["Reconciled"]["reason"] == "ReferencedPortNotFound"
    assert "spec.http[0].route[0].destination.port.number" in c["Reconciled"]["message"]
    statuses = {s["resource"]: s for s in operator.status()}
    assert statuses[f"VirtualService {ns}/ratings"]["accepted"] is True
    assert statuses[f"VirtualService {ns}/ratings"]["reconciled"] is False
    printed = kube_cluster.kubectl("get", "vs", "ratings", "-n", ns).stdout
    assert "ratings" in printed.splitlines()[1] and "HOSTS" in printed.splitlines()[0]
    assert json.loads(kube_cluster.kubectl("get", "vs", "ratings", "-n", ns, "-o", "json").stdout)[
        "spec"
    ]["hosts"] == ["ratings"]


def test_every_istio_kind_gets_its_verdict_in_status(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    ns = kube_namespace
    kube_cluster.apply(
        f"""
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: ratings, namespace: {ns}}}
spec:
  host: ratings
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: default, namespace: {ns}}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings-viewer, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  action: ALLOW
  rules: [{{from: [{{source: {{namespaces: [{ns}]}}}}]}}]
"""
    )
    for kind, name in (
        ("destinationrule", "ratings"),
        ("peerauthentication", "default"),
        ("authorizationpolicy", "ratings-viewer"),
    ):
        c = operator.wait_for(
            lambda k=kind, n=name: (
                found if "Reconciled" in (found := conditions(kube_cluster, ns, k, n)) else None
            ),
            what=f"status of {kind}/{name}",
        )
        assert c["Accepted"]["status"] == "True", (kind, c)
        assert c["_"]["observedGeneration"] == 1
    # kubectl's printer columns come from the CRDs.
    header = kube_cluster.kubectl("get", "peerauthentication", "-n", ns).stdout.splitlines()[0]
    assert header.split() == ["NAME", "MODE", "AGE"]
