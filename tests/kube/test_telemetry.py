"""Telemetry in cluster mode: watched from the apiserver (its CRD generated from the model),
and its findings written to its status: a provider the mesh config does not define, and a
Telemetry istiod's validation refuses."""

from __future__ import annotations

from typing import Any

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess


def status_of(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get_json("telemetry", name, "-n", ns)
    return found.get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


def codes(status: dict[str, Any]) -> list[str]:
    return [m["type"]["code"] for m in status.get("validationMessages", [])]


def test_telemetry_status_carries_its_findings(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(
        f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: logs, namespace: {ns}}}
spec:
  accessLogging: [{{providers: [{{name: envoy}}]}}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {{name: unknown-provider, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  accessLogging: [{{providers: [{{name: otel-collector}}]}}]
"""
    )
    good = operator.wait_for(
        lambda: s if "Reconciled" in conditions(s := status_of(kube_cluster, ns, "logs")) else None,
        what="status of the Telemetry",
    )
    assert conditions(good)["Accepted"] == "True"
    assert conditions(good)["Reconciled"] == "True"
    assert codes(good) == []
    unknown = operator.wait_for(
        lambda: (
            s if "CP0800" in codes(s := status_of(kube_cluster, ns, "unknown-provider")) else None
        ),
        what="the unknown provider's finding",
    )
    [message] = unknown["validationMessages"]
    assert message["description"].startswith("spec.accessLogging[0].providers[0].name:")
    assert "otel-collector" in message["description"]
