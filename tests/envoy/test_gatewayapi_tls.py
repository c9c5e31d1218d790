"""HTTPS at a Gateway API Gateway (file mode, the mesh CA on so the gateway proves its
identity): a listener's ``certificateRefs`` Secret is served over SDS, checked with
``curl --cacert``; a listener whose Secret is missing is not programmed (ResolvedRefs False,
InvalidCertificateRef) and serves nothing; a listener whose Secret is in another namespace
is served its certificate (seen in the TLS handshake) while a ReferenceGrant there allows it,
and withdrawn (ResolvedRefs False/RefNotPermitted, no handshake) when the grant goes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from tests.envoy.test_gateway_tls import start_gateway, wait_until
from tests.envoy.test_gatewayapi import GW_LABELS, gateway_api
from tests.support import meshes, pki

HOST = "secure.example.com"
NODE = "router~127.0.9.21~edge-1.infra~infra.svc.cluster.local"
APP = "127.0.9.22"


@dataclass
class TlsEdge:
    mesh: LocalMesh
    pems: Path
    https: int
    broken: int
    shared: int
    proxy: Any


SHARED_HOST = "shared.example.com"
GRANT = gateway_api(
    "ReferenceGrant",
    "infra-gateways",
    """
    from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
    to: [{group: "", kind: Secret, name: shared-cert}]
    """,
    namespace="certs",
)


def gateway_yaml(https: int, broken: int, shared: int) -> str:
    return gateway_api(
        "Gateway",
        "edge",
        f"""
        gatewayClassName: istio
        listeners:
        - name: https
          port: {https}
          protocol: HTTPS
          hostname: {HOST}
          tls: {{mode: Terminate, certificateRefs: [{{name: edge-cert}}]}}
          allowedRoutes: {{namespaces: {{from: All}}}}
        - name: broken
          port: {broken}
          protocol: HTTPS
          tls: {{mode: Terminate, certificateRefs: [{{name: missing}}]}}
          allowedRoutes: {{namespaces: {{from: All}}}}
        - name: shared
          port: {shared}
          protocol: HTTPS
          hostname: {SHARED_HOST}
          tls:
            mode: Terminate
            certificateRefs: [{{name: shared-cert, namespace: certs}}]
          allowedRoutes: {{namespaces: {{from: All}}}}
        """,
        namespace="infra",
    )


ROUTE = gateway_api(
    "HTTPRoute",
    "secure",
    f"""
    parentRefs: [{{name: edge, namespace: infra}}]
    hostnames: [{HOST}]
    rules: [{{backendRefs: [{{name: app, port: 8080}}]}}]
    """,
)


@pytest.fixture(scope="module")
def tls_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEdge]:
    workdir = tmp_path_factory.mktemp("gwapi-tls")
    ca_dir = workdir / "ca"
    mesh = LocalMesh(workdir, control_plane_args=["--ca-dir", str(ca_dir)])
    try:
        target = free_port()
        mesh.backend("app", APP, target)
        ca = pki.current_ca("gateway api root")
        pems = workdir / "pems"
        pems.mkdir()
        (pems / "ca.pem").write_text(pki.pem(ca[0]))
        https, broken, shared = free_port(), free_port(), free_port()
        mesh.write(
            "all.yaml",
            meshes.join(
                meshes.service("app", 8080, target_port=target),
                meshes.pod("app", APP, app="app"),
                pki.tls_secret_yaml(
                    "edge-cert", "infra", *pki.make_leaf(ca, dns_names=[HOST], common_name="edge")
                ),
                pki.tls_secret_yaml(
                    "shared-cert",
                    "certs",
                    *pki.make_leaf(ca, dns_names=[SHARED_HOST], common_name="shared"),
                ),
                gateway_yaml(https, broken, shared),
                ROUTE,
            ),
        )
        mesh.write("grant.yaml", GRANT)
        mesh.start()
        proxy = start_gateway(mesh, ca_dir, NODE, "infra", GW_LABELS, "edge-istio")
        mesh.debug.wait_synced(proxy.node_id, types=("cds", "eds", "lds", "rds"), timeout=30)
        proxy.envoy.wait_live()
        edge = TlsEdge(mesh, pems, https, broken, shared, proxy)
        wait_until(lambda: pki.served_subject(https, HOST, pems / "ca.pem") is not None, "HTTPS")
        yield edge
    finally:
        mesh.stop()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True, timeout=15
    )


def test_https_with_the_certificate_ref_secret_checked_by_curl_cacert(tls_edge: TlsEdge) -> None:
    port = tls_edge.https
    out = curl(
        "--cacert",
        str(tls_edge.pems / "ca.pem"),
        "--resolve",
        f"{HOST}:{port}:127.0.0.1",
        "-w",
        "\n%{http_code}",
        f"https://{HOST}:{port}/hello",
    )
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body)["name"] == "app"


def test_a_listener_whose_secret_is_missing_is_not_programmed(tls_edge: TlsEdge) -> None:
    status = tls_edge.mesh.debug.get("/debug/gateway_api_status")["KubernetesGateway infra/edge"]
    broken = next(entry for entry in status["listeners"] if entry["name"] == "broken")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in broken["conditions"]}
    assert conditions["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert conditions["Programmed"] == ("False", "Invalid")
    out = curl("-k", f"https://127.0.0.1:{tls_edge.broken}/")
    assert out.returncode != 0


def shared_listener(edge: TlsEdge) -> dict[str, tuple[str, str]]:
    status = edge.mesh.debug.get("/debug/gateway_api_status")["KubernetesGateway infra/edge"]
    entry = next(e for e in status["listeners"] if e["name"] == "shared")
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


SHARED_SDS = "kubernetes-gateway://certs/shared-cert"


def active_secrets(edge: TlsEdge) -> str:
    return str(edge.proxy.envoy.admin("/config_dump?resource=dynamic_active_secrets"))


def test_another_namespaces_secret_is_served_while_a_reference_grant_allows_it(
    tls_edge: TlsEdge,
) -> None:
    ca = tls_edge.pems / "ca.pem"
    wait_until(lambda: pki.served_subject(tls_edge.shared, SHARED_HOST, ca) is not None, "shared")
    assert pki.served_subject(tls_edge.shared, SHARED_HOST, ca) == "CN=shared"
    assert shared_listener(tls_edge)["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert shared_listener(tls_edge)["Programmed"] == ("True", "Programmed")
    assert SHARED_SDS in active_secrets(tls_edge)
    # The grant goes: the listener says why, its TLS server is withdrawn, the Secret is no
    # longer served to the gateway.
    tls_edge.mesh.remove("grant.yaml")
    try:
        wait_until(lambda: pki.served_subject(tls_edge.shared, SHARED_HOST, ca) is None, "revoked")
        assert shared_listener(tls_edge)["ResolvedRefs"] == ("False", "RefNotPermitted")
        assert shared_listener(tls_edge)["Programmed"] == ("False", "Invalid")
        # Envoy drops the secret once the draining listener no longer holds it.
        wait_until(lambda: SHARED_SDS not in active_secrets(tls_edge), "secret dropped")
    finally:
        tls_edge.mesh.write("grant.yaml", GRANT)
    wait_until(lambda: pki.served_subject(tls_edge.shared, SHARED_HOST, ca) is not None, "again")
