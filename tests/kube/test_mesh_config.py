"""The mesh config in cluster mode: the ``istio`` ConfigMap's ``mesh`` key in istio-system,
watched; a refused version keeps the last good one, is reported in the log with the
ConfigMap and field named, and gets a Warning Event on the ConfigMap; a CUSTOM policy sees
the providers it defines."""

from __future__ import annotations

import textwrap

import pytest

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess

# About a minute on the real apiserver: in the slow tier (CI runs it), so that a warm
# `make test` stays under ten minutes.
pytestmark = pytest.mark.slow


def configmap(mesh: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": textwrap.dedent(mesh)},
    }


def mesh_status(operator: OperatorProcess) -> dict | None:
    found = [s for s in operator.status() if s["resource"] == "MeshConfig istio-system/istio"]
    return found[0] if found else None


def custom_finding(operator: OperatorProcess, ns: str) -> list[str]:
    found = [s for s in operator.status() if s["resource"] == f"AuthorizationPolicy {ns}/ext"]
    return [i for s in found for i in s["issues"] if "CP0421" in i]


def test_the_istio_configmap_is_the_mesh_config_and_its_last_good_version_stays(
    kube_cluster: LocalCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_cluster.apply(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "ext", "namespace": ns},
            "spec": {
                "action": "CUSTOM",
                "provider": {"name": "authz"},
                "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}],
            },
        }
    )
    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "authz", "namespace": ns},
            "spec": {"ports": [{"name": "grpc", "port": 9000}]},
        }
    )
    # No mesh config yet: the provider is unknown (CP0421, fail closed).
    operator.wait_for(lambda: custom_finding(operator, ns), what="CP0421 before the mesh config")
    good = f"""
    trustDomain: cluster.local
    extensionProviders:
    - name: authz
      envoyExtAuthzGrpc: {{service: {ns}/authz.{ns}.svc.cluster.local, port: 9000}}
    """
    kube_cluster.apply(configmap(good))
    operator.wait_for(lambda: not custom_finding(operator, ns), what="the provider resolved")
    status = mesh_status(operator)
    assert status is not None and status["accepted"]
    # The accepted version is kept on the ConfigMap, for a restarted replica.
    operator.wait_for(
        lambda: (
            "authz"
            in kube_cluster.get_json("configmap", "istio", "-n", "istio-system")["metadata"]
            .get("annotations", {})
            .get("controlplane.dev/last-accepted-mesh", "")
        ),
        what="the last accepted mesh config on the ConfigMap",
    )

    # A misspelt field: refused, the last good version (with the provider) keeps serving.
    kube_cluster.apply(configmap(good.replace("extensionProviders", "extensionProvider")))
    status = operator.wait_for(
        lambda: (s := mesh_status(operator)) is not None and not s["accepted"] and s,
        what="the refused mesh config",
    )
    [issue] = [i for i in status["issues"] if "CP0104" in i]
    assert "ConfigMap istio-system/istio" in issue and "data.mesh.extensionProvider:" in issue
    assert not custom_finding(operator, ns)  # the last good version still defines it
    assert "data.mesh.extensionProvider" in operator.log_text()
    events = operator.wait_for(
        lambda: [
            e
            for e in kube_cluster.get_json("events", "-n", "istio-system")["items"]
            if e["involvedObject"].get("kind") == "ConfigMap"
            and e["involvedObject"].get("name") == "istio"
            and e["type"] == "Warning"
        ],
        what="a Warning Event on the ConfigMap",
    )
    assert "extensionProvider" in events[-1]["message"]

    # A restart while the ConfigMap holds the refused version: the last accepted is served.
    operator.stop()
    operator.start()
    status = operator.wait_for(
        lambda: (s := mesh_status(operator)) is not None and s,
        what="the mesh config after the restart",
    )
    assert not status["accepted"]
    assert any("CP0110" in i for i in status["issues"]), status
    operator.wait_for(
        lambda: any(s["resource"] == f"AuthorizationPolicy {ns}/ext" for s in operator.status()),
        what="the policy after the restart",
    )
    assert not custom_finding(operator, ns)  # the provider of the last accepted version

    # Deleting the ConfigMap: istiod's defaults again (no providers).
    kube_cluster.kubectl("delete", "configmap", "istio", "-n", "istio-system")
    operator.wait_for(lambda: custom_finding(operator, ns), what="CP0421 after the deletion")
