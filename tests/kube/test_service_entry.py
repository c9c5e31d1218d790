"""ServiceEntry and WorkloadEntry on the real apiserver: served by their CRDs in every
networking version, refused at the door with istiod's reasons, watched, and given a verdict
in status (a host colliding with a Service's is reported there, CP0540)."""

from __future__ import annotations

import pytest

from tests.cluster.cluster import KubectlError, LocalCluster
from tests.kube.operator import OperatorProcess


def conditions(cluster: LocalCluster, ns: str, kind: str, name: str) -> dict[str, dict]:
    obj = cluster.get_json(kind, name, "-n", ns)
    status = obj.get("status") or {}
    out = {c["type"]: c for c in status.get("conditions", [])}
    out["_"] = {"generation": obj["metadata"].get("generation"), **status}
    return out


def test_entries_are_watched_and_get_their_verdict_in_status(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(
        f"""
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: {ns}}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: ratings-vm, namespace: {ns}}}
spec:
  hosts: [ratings.{ns}.svc.cluster.local, ratings.vm.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: ratings}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {{name: ratings-vm-1, namespace: {ns}}}
spec:
  address: 10.20.0.5
  labels: {{app: ratings}}
  serviceAccount: ratings
"""
    )
    for kind, name in (("serviceentry", "ratings-vm"), ("workloadentry", "ratings-vm-1")):
        c = operator.wait_for(
            lambda k=kind, n=name: (
                found if "Reconciled" in (found := conditions(kube_cluster, ns, k, n)) else None
            ),
            what=f"status of {kind}/{name}",
        )
        assert c["Accepted"]["status"] == "True", (kind, c)
        assert c["_"]["observedGeneration"] == 1
    statuses = {s["resource"]: s for s in operator.status()}
    found = statuses[f"ServiceEntry {ns}/ratings-vm"]
    assert any(
        "CP0540" in str(issue) and "spec.hosts[0]" in str(issue) for issue in found["issues"]
    ), found
    header = kube_cluster.kubectl("get", "serviceentry", "-n", ns).stdout.splitlines()[0]
    assert header.split() == ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"]


def test_an_invalid_service_entry_is_refused_with_istiods_reasons(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(
            f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: everything, namespace: {kube_namespace}}}
spec:
  hosts: ["*"]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: NONE
  endpoints: [{{address: 10.0.0.1}}]
"""
        )
    message = refused.value.stderr
    assert 'admission webhook "serviceentries.validation.controlplane.istio.io" denied' in message
    assert "spec.hosts[0]: invalid host *" in message
    assert "spec.endpoints: no endpoints should be provided for resolution NONE" in message
