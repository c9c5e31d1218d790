"""A gateway in a zero-trust mesh: with its own identity (a token for its service account) it
gets a mesh certificate over SDS and reaches STRICT workloads over mutual TLS, while the
clients outside speak plain HTTP to it (tests/envoy/zero_trust.py's mesh)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.app import obtain_token
from controlplane.testing.mesh import GatewayProxy
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import send
from tests.envoy.zero_trust import ZeroTrustMesh, peer_authentication, start_zero_trust_mesh
from tests.support import meshes

HOST = "payment.example.com"


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ZeroTrustMesh, GatewayProxy, int]]:
    zt = start_zero_trust_mesh(tmp_path_factory.mktemp("gateway-zt"))
    try:
        port = free_port()
        zt.mesh.write(
            "gateway.yaml",
            meshes.join(
                meshes.resource(
                    "Gateway",
                    "payment-gateway",
                    f"""
                    selector: {{istio: ingressgateway}}
                    servers:
                    - port: {{number: {port}, name: http, protocol: HTTP}}
                      hosts: ["default/{HOST}"]
                    """,
                ),
                meshes.resource(
                    "VirtualService",
                    "payment-edge",
                    f"""
                    hosts: ["{HOST}"]
                    gateways: [payment-gateway]
                    http: [{{route: [{{destination: {{host: payment, port: {{number: 9080}}}}}}]}}]
                    """,
                ),
            ),
        )
        account = "istio-ingressgateway"
        gateway = zt.mesh.gateway(
            service_account=account,
            xds_token=obtain_token(zt.ca_dir, "istio-system", account),
            wait=False,
        )
        zt.mesh.debug.wait_synced(gateway.node_id, types=("cds", "eds", "lds", "rds", "sds"))
        gateway.envoy.wait_live()
        yield zt, gateway, port
    finally:
        zt.mesh.stop()


def test_the_gateway_reaches_a_strict_workload_over_mutual_tls(
    edge: tuple[ZeroTrustMesh, GatewayProxy, int],
) -> None:
    zt, gateway, port = edge
    zt.write("peer-authentication.yaml", peer_authentication("STRICT"))
    try:
        status, _, body = send(port, HOST, "/")
        assert status == 200 and b"payment" in body
        handshakes = gateway.envoy.stat(
            "cluster.outbound|9080||payment.default.svc.cluster.local.ssl.handshake"
        )
        assert handshakes >= 1
        # Its certificate and the mesh root came over SDS (the next test checks whose it is).
        dump = gateway.envoy.admin_json("/config_dump?resource=dynamic_active_secrets")
        names = {s["name"] for s in dump["configs"]}
        assert {"default", "ROOTCA"} <= names
    finally:
        zt.remove("peer-authentication.yaml")


def test_a_workload_policy_sees_the_gateways_identity(
    edge: tuple[ZeroTrustMesh, GatewayProxy, int],
) -> None:
    zt, _, port = edge
    only_gateway = meshes.resource(
        "AuthorizationPolicy",
        "payment-from-the-edge",
        """
        selector: {matchLabels: {app: payment}}
        rules: [{from: [{source: {principals: [cluster.local/ns/istio-system/sa/istio-ingressgateway]}}]}]
        """,
    )
    zt.write("policy.yaml", only_gateway)
    try:
        assert send(port, HOST, "/")[0] == 200
        assert zt.call("web", "GET", "/")[0] == 403  # a sidecar of another identity is not
    finally:
        zt.remove("policy.yaml")
