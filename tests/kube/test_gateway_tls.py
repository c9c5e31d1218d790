"""A Gateway with a credentialName Secret on the real kube-apiserver: a real Envoy gateway
(router mode, proved by its projected service-account token) serves the Secret's
certificate; the Secret is rotated with kubectl and the gateway serves the new certificate
without a restart. The Gateway's status names a credential Secret that does not exist."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess
from tests.support import meshes, pki

HOST = "bookinfo.example.com"
GATEWAY_IP = "127.0.3.40"


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def gateway_yaml(namespace: str, port: int) -> str:
    """No gateway Pod is applied (nothing schedules one here): the credentials are looked for
    in the Gateway's own namespace, where the gateway runs."""
    return meshes.join(
        meshes.resource(
            "Gateway",
            "bookinfo-gateway",
            f"""
            selector: {{istio: ingressgateway}}
            servers:
            - port: {{number: {port}, name: https, protocol: HTTPS}}
              hosts: ["{HOST}"]
              tls: {{mode: SIMPLE, credentialName: bookinfo-cred}}
            - port: {{number: {free_port()}, name: https-other, protocol: HTTPS}}
              hosts: ["other.example.com"]
              tls: {{mode: SIMPLE, credentialName: not-created-yet}}
            """,
            namespace=namespace,
        ),
    )


def test_a_rotated_credential_secret_is_served_by_the_running_gateway(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = kube_namespace
    port = free_port()
    ca = pki.current_ca("gateway root")
    (tmp_path / "ca.pem").write_text(pki.pem(ca[0]))
    first = pki.make_leaf(ca, dns_names=[HOST], common_name="first")
    kube_cluster.apply(pki.tls_secret_yaml("bookinfo-cred", ns, *first))
    kube_cluster.apply(gateway_yaml(ns, port))

    kube_cluster.ensure_service_account(ns, "ingressgateway")
    token = kube_cluster.kubectl(
        "create", "token", "ingressgateway", "-n", ns, "--audience", "istio-ca"
    ).stdout.strip()
    node_id = f"router~{GATEWAY_IP}~ingressgateway-1.{ns}~{ns}.svc.cluster.local"
    bootstrap = render_bootstrap(
        node_id=node_id,
        namespace=ns,
        labels={"istio": "ingressgateway"},
        service_account="ingressgateway",
        xds_port=operator.xds_port,
        admin_port=free_port(),
        xds_token=token,
    )
    envoy = EnvoyProcess(bootstrap, tmp_path, name="ingressgateway").start()
    try:
        envoy.wait_live()
        wait_until(
            lambda: pki.served_subject(port, HOST, tmp_path / "ca.pem") == "CN=first",
            "the gateway to serve the Secret's certificate",
        )
        assert envoy.process is not None
        pid = envoy.process.pid

        rotated = pki.make_leaf(ca, dns_names=[HOST], common_name="rotated")
        kube_cluster.apply(pki.tls_secret_yaml("bookinfo-cred", ns, *rotated))
        wait_until(
            lambda: pki.served_subject(port, HOST, tmp_path / "ca.pem") == "CN=rotated",
            "the gateway to serve the rotated certificate",
        )
        assert envoy.process.pid == pid and envoy.process.poll() is None
        assert envoy.stat("listener_manager.listener_modified") == 0

        # The server whose Secret does not exist is named in the Gateway's status.
        def reported() -> bool:
            for entry in operator.status():
                if entry["resource"] == f"Gateway {ns}/bookinfo-gateway":
                    return any(
                        "CP0520" in i and f"{ns}/not-created-yet" in i for i in entry["issues"]
                    )
            return False

        wait_until(reported, "CP0520 in the Gateway's status")
    finally:
        envoy.stop()
