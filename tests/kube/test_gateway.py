"""Gateways on the real apiserver: a Gateway and a VirtualService bound to it, applied with
kubectl, reach a real gateway Envoy; the webhook refuses a broken Gateway; status says when a
VirtualService names a Gateway that does not exist (the ingress-gateway component:
tests/kube/test_gateway_manifests.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.cluster.cluster import KubectlError, LocalCluster
from tests.kube.operator import OperatorProcess

HOST = "reviews.example.com"
GATEWAY_IP = "127.0.3.30"


def gateway(ns: str, port: int, name: str = "edge") -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
          selector: {{istio: ingressgateway}}
          servers:
          - port: {{number: {port}, name: http, protocol: HTTP}}
            hosts: ["{HOST}"]
        """
    )


def bound(ns: str, gateways: str, name: str = "reviews-edge", w1: int = 80, w2: int = 20) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
          hosts: ["{HOST}"]
          gateways: {gateways}
          http:
          - route:
            - {{destination: {{host: reviews, subset: v1}}, weight: {w1}}}
            - {{destination: {{host: reviews, subset: v2}}, weight: {w2}}}
        """
    )


def start_gateway(operator: OperatorProcess, workdir: Path) -> tuple[str, EnvoyProcess]:
    node_id = f"router~{GATEWAY_IP}~ingress-1.istio-system~istio-system.svc.cluster.local"
    bootstrap = render_bootstrap(
        node_id=node_id,
        namespace="istio-system",
        labels={"istio": "ingressgateway"},
        service_account="istio-ingressgateway",
        xds_port=operator.xds_port,
        admin_port=free_port(),
        workload_name="ingress-1",
        instance_ips=GATEWAY_IP,
        extra_metadata={"INTERCEPTION_MODE": "NONE"},
    )
    envoy = EnvoyProcess(bootstrap, workdir, name="gateway").start()
    operator.debug.wait_synced(node_id, timeout=30)
    envoy.wait_live()
    return node_id, envoy


def validation_codes(cluster: LocalCluster, ns: str, kind: str, name: str) -> list[str]:
    status = cluster.get_json(kind, name, "-n", ns).get("status") or {}
    return [m["type"]["code"] for m in status.get("validationMessages", [])]


def test_a_gateway_and_a_bound_virtual_service_applied_with_kubectl_carry_traffic(
    kube_cluster: LocalCluster, operator: OperatorProcess, reviews, tmp_path: Path
) -> None:
    ns, sidecar = reviews
    port = free_port()
    kube_cluster.apply(gateway(ns, port))
    kube_cluster.apply(bound(ns, "[edge]"))
    node_id, envoy = start_gateway(operator, tmp_path)
    try:
        counts = count_backends(port, HOST, 500)
        assert sum(counts.values()) == 500 and set(counts) == {"reviews-v1", "reviews-v2"}, counts
        assert abs(100.0 * counts["reviews-v1"] / 500 - 80) <= 6, counts
        assert send(port, "elsewhere.example.com")[0] == 404
        # Bound to the gateway only: the mesh's sidecars do not get it (reviews.example.com
        # is no service of theirs), and the Gateway is accepted and reconciled.
        conditions = operator.wait_for(
            lambda: (
                {
                    c["type"]: c["status"]
                    for c in (
                        # full name: `gateway` alone is the Gateway API's
                        kube_cluster.get_json("gateways.networking.istio.io", "edge", "-n", ns).get(
                            "status"
                        )
                        or {}
                    ).get("conditions", [])
                }
                or None
            ),
            what="the Gateway's status",
        )
        assert conditions.get("Accepted") == "True" and conditions.get("Reconciled") == "True"
        # kubectl edit of the weights: the gateway follows.
        before = operator.debug.type_state(node_id, "rds")["acked_version"]
        kube_cluster.apply(bound(ns, "[edge]", w1=0, w2=100))
        operator.debug.wait_synced(node_id, types=("rds",), newer_than={"rds": before})
        assert count_backends(port, HOST, 50) == {"reviews-v2": 50}
    finally:
        envoy.stop()


def test_a_virtual_service_bound_to_a_missing_gateway_says_so_in_its_status(
    kube_cluster: LocalCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_cluster.apply(bound(ns, "[nowhere]", name="lost"))
    codes = operator.wait_for(
        lambda: validation_codes(kube_cluster, ns, "virtualservice", "lost") or None,
        what="the VirtualService's validation messages",
    )
    assert "CP0501" in codes
    status = kube_cluster.get_json("virtualservice", "lost", "-n", ns)["status"]
    [message] = [
        m["description"] for m in status["validationMessages"] if m["type"]["code"] == "CP0501"
    ]
    assert f"gateway '{ns}/nowhere' does not exist" in message and "IST0101" in message
    # Creating the Gateway clears the finding (the check follows what it read).
    kube_cluster.apply(gateway(ns, 8080, name="nowhere"))
    operator.wait_for(
        lambda: "CP0501" not in validation_codes(kube_cluster, ns, "virtualservice", "lost"),
        what="the finding to clear",
    )


def test_the_webhook_refuses_a_gateway_istiod_would_refuse(
    kube_cluster: LocalCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    broken = gateway(kube_namespace, 443).replace("protocol: HTTP", "protocol: HTTPS")
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(broken)
    message = refused.value.stderr
    assert 'admission webhook "gateways.validation.controlplane.istio.io" denied' in message
    assert "spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols" in message
