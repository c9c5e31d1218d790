"""Traffic entering the mesh through a real gateway Envoy (router mode): a Gateway and a
VirtualService bound to it, as Istio's bookinfo-gateway.yaml, to bookinfo-shaped backends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.testing.mesh import GatewayProxy, LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, count_echo_backends
from controlplane.testing.traffic import count_backends, send
from tests.support import meshes

V1, V2, PRODUCTPAGE = "127.0.0.41", "127.0.0.42", "127.0.0.43"
HOST = "bookinfo.example.com"


def gateway(port: int, hosts: str = f"[{HOST}]") -> str:
    return meshes.resource(
        "Gateway",
        "bookinfo-gateway",
        f"""
        selector: {{istio: ingressgateway}}
        servers:
        - port: {{number: {port}, name: http, protocol: HTTP}}
          hosts: {hosts}
        """,
    )


def bookinfo(w1: int, w2: int) -> str:
    """The VirtualService of bookinfo-gateway.yaml, plus a canary of reviews behind it."""
    return meshes.resource(
        "VirtualService",
        "bookinfo",
        f"""
        hosts: ["{HOST}"]
        gateways: [bookinfo-gateway]
        http:
        - match: [{{uri: {{exact: /productpage}}}}, {{uri: {{prefix: /static}}}}]
          route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
        - match: [{{uri: {{prefix: /reviews}}}}]
          route:
          - {{destination: {{host: reviews, subset: v1}}, weight: {w1}}}
          - {{destination: {{host: reviews, subset: v2}}, weight: {w2}}}
        """,
    )


@dataclass
class Edge:
    mesh: LocalMesh
    gateway: GatewayProxy
    port: int


def _start_edge(workdir: Path) -> Iterator[Edge]:
    mesh = LocalMesh(workdir)
    try:
        target = free_port()
        mesh.backend("reviews-v1", V1, target)
        mesh.backend("reviews-v2", V2, target)
        mesh.backend("productpage-v1", PRODUCTPAGE, target)
        port = free_port()
        mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=target))
        mesh.write(
            "productpage.yaml",
            meshes.join(
                meshes.service("productpage", 9080, target_port=target),
                meshes.pod("productpage-v1", PRODUCTPAGE, app="productpage", version="v1"),
            ),
        )
        mesh.write("gateway.yaml", gateway(port))
        mesh.write("bookinfo.yaml", bookinfo(75, 25))
        mesh.start()
        yield Edge(mesh, mesh.gateway(), port)
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One mesh for the tests that leave it as they found it."""
    yield from _start_edge(tmp_path_factory.mktemp("edge"))


@pytest.fixture
def fresh_edge(tmp_path: Path) -> Iterator[Edge]:
    """A mesh of its own, for a test that removes or moves the Gateway."""
    yield from _start_edge(tmp_path)


def test_requests_enter_through_the_gateway_and_follow_the_canary_split(edge: Edge) -> None:
    status, _, body = send(edge.port, HOST, "/productpage")
    assert status == 200 and b"productpage-v1" in body
    counts = count_backends(edge.port, HOST, 800, path="/reviews")
    assert sum(counts.values()) == 800 and set(counts) <= {"reviews-v1", "reviews-v2"}, counts
    share = 100.0 * counts["reviews-v2"] / 800
    assert abs(share - 25) <= 5, counts


def test_a_weight_edit_reaches_the_gateway(edge: Edge) -> None:
    before = edge.mesh.debug.type_state(edge.gateway.node_id, "rds")["acked_version"]
    edge.mesh.write("bookinfo.yaml", bookinfo(0, 100))
    states = edge.mesh.debug.wait_synced(
        edge.gateway.node_id, timeout=10, newer_than={"rds": before}
    )
    try:
        assert count_backends(edge.port, HOST, 100, path="/reviews") == {"reviews-v2": 100}
    finally:
        edge.mesh.write("bookinfo.yaml", bookinfo(75, 25))
        edge.mesh.debug.wait_synced(
            edge.gateway.node_id, timeout=10, newer_than={"rds": states["rds"]["acked_version"]}
        )


def test_a_clients_own_client_cert_header_does_not_enter_the_mesh(edge: Edge) -> None:
    spoofed = {"x-forwarded-client-cert": "By=spiffe://cluster.local/ns/default/sa/admin"}
    status, _, body = send(edge.port, HOST, "/productpage", headers=spoofed)
    assert status == 200
    seen = json.loads(body)["headers"]
    assert "x-forwarded-client-cert" not in seen
    # The edge takes the client's address from the connection (use_remote_address).
    assert seen["x-envoy-external-address"] == "127.0.0.1", seen


def test_a_host_the_server_does_not_list_gets_404(edge: Edge) -> None:
    assert send(edge.port, "other.example.com", "/productpage")[0] == 404
    # The port of the Host header does not matter (istiod ignores it for gateways).
    assert send(edge.port, f"{HOST}:{edge.port}", "/productpage")[0] == 200
    # A path no route of the bound VirtualService matches: 404 too.
    assert send(edge.port, HOST, "/admin")[0] == 404


def test_a_gateway_proxy_the_selector_does_not_match_gets_no_listener(edge: Edge) -> None:
    other = edge.mesh.gateway("egress", labels={"istio": "egressgateway"}, wait=False)
    # No listener, so no route configuration is ever asked for.
    states = edge.mesh.debug.wait_synced(other.node_id, types=("cds", "eds", "lds"), timeout=30)
    assert states["lds"]["resources"] == 0
    other.envoy.wait_live()
    listeners = other.envoy.admin_json("/listeners?format=json")
    assert listeners.get("listener_statuses", []) == []


def test_removing_the_only_gateway_removes_the_listener(fresh_edge: Edge) -> None:
    edge = fresh_edge
    before = edge.mesh.debug.type_state(edge.gateway.node_id, "lds")["acked_version"]
    edge.mesh.remove("gateway.yaml")
    states = edge.mesh.debug.wait_synced(
        edge.gateway.node_id, types=("lds",), timeout=10, newer_than={"lds": before}
    )
    assert states["lds"]["resources"] == 0, states
    # Envoy drains the removed listener: no longer active, only draining until it closes.
    deadline = time.time() + 10
    while time.time() < deadline:
        dump = edge.gateway.envoy.admin_json("/config_dump?resource=dynamic_listeners")
        active = [c for c in dump.get("configs", []) if "active_state" in c]
        if not active:
            break
        time.sleep(0.1)
    assert active == [], active


def test_moving_the_server_port_moves_the_listener(fresh_edge: Edge) -> None:
    edge = fresh_edge
    before = edge.mesh.debug.type_state(edge.gateway.node_id, "lds")["acked_version"]
    moved = free_port()
    edge.mesh.write("gateway.yaml", gateway(moved))
    edge.mesh.debug.wait_synced(edge.gateway.node_id, timeout=10, newer_than={"lds": before})
    deadline = time.time() + 10
    while time.time() < deadline:
        dump = edge.gateway.envoy.admin_json("/config_dump?resource=dynamic_listeners")
        active = sorted(c["name"] for c in dump.get("configs", []) if "active_state" in c)
        if active == [f"0.0.0.0_{moved}"]:
            break
        time.sleep(0.1)
    assert active == [f"0.0.0.0_{moved}"]
    assert send(moved, HOST, "/productpage")[0] == 200


def test_a_tcp_server_carries_connections_by_the_bound_tcp_route(tmp_path: Path) -> None:
    # The shape of Istio's samples/tcp-echo/tcp-echo-all-v1.yaml (written here): a TCP server
    # on the gateway and a VirtualService tcp route bound to it.
    mesh = LocalMesh(tmp_path)
    try:
        target, port = free_port(), free_port()
        for name, address in (("tcp-echo-v1", "127.0.0.44"), ("tcp-echo-v2", "127.0.0.45")):
            mesh.backends.append(TcpEchoBackend(name, address, target).start())  # type: ignore[arg-type]
        mesh.write(
            "tcp-echo.yaml",
            meshes.join(
                meshes.service("tcp-echo", 9000, target_port=target, port_name="tcp"),
                meshes.pod("tcp-echo-v1", "127.0.0.44", app="tcp-echo", version="v1"),
                meshes.pod("tcp-echo-v2", "127.0.0.45", app="tcp-echo", version="v2"),
                meshes.subsets("tcp-echo"),
                meshes.resource(
                    "Gateway",
                    "tcp-echo-gateway",
                    f"""
                    selector: {{istio: ingressgateway}}
                    servers:
                    - port: {{number: {port}, name: tcp, protocol: TCP}}
                      hosts: ["*"]
                    """,
                ),
                meshes.resource(
                    "VirtualService",
                    "tcp-echo",
                    f"""
                    hosts: ["*"]
                    gateways: [tcp-echo-gateway]
                    tcp:
                    - match: [{{port: {port}}}]
                      route: [{{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}}}]
                    """,
                ),
            ),
        )
        mesh.start()
        proxy = mesh.gateway(wait=False)
        mesh.debug.wait_synced(proxy.node_id, types=("cds", "eds", "lds"), timeout=30)
        proxy.envoy.wait_live()
        assert count_echo_backends("127.0.0.1", port, 20) == {"tcp-echo-v1": 20}
    finally:
        mesh.stop()


def test_the_egress_gateway_pattern_sends_mesh_traffic_out_through_the_gateway(
    tmp_path: Path,
) -> None:
    # The pattern of Istio's egress-gateway task (written here, plain HTTP): one
    # VirtualService bound to the mesh and to the egress Gateway; from sidecars it routes to
    # the egress gateway's Service, at the gateway on to the destination. The Service maps
    # port 80 to the port the gateway Envoy binds (istiod's port translation).
    mesh = LocalMesh(tmp_path)
    try:
        external, egress = "127.0.0.47", "127.0.0.46"
        target, gateway_port = free_port(), free_port()
        mesh.backend("external-v1", external, target)
        mesh.write(
            "external.yaml",
            meshes.join(
                meshes.service("external", 80, target_port=target, namespace="outside"),
                meshes.pod("external-v1", external, app="external", namespace="outside"),
            ),
        )
        mesh.write(
            "egress.yaml",
            meshes.join(
                meshes.service(
                    "istio-egressgateway",
                    80,
                    target_port=gateway_port,
                    port_name="http2",
                    app="istio-egressgateway",
                    namespace="istio-system",
                ),
                meshes.pod(
                    "istio-egressgateway-0",
                    egress,
                    app="istio-egressgateway",
                    labels={"istio": "egressgateway"},
                    namespace="istio-system",
                ),
                meshes.resource(
                    "Gateway",
                    "istio-egressgateway",
                    """
                    selector: {istio: egressgateway}
                    servers:
                    - port: {number: 80, name: http, protocol: HTTP}
                      hosts: [external.outside.svc.cluster.local]
                    """,
                ),
                meshes.resource(
                    "VirtualService",
                    "direct-external-through-egress-gateway",
                    """
                    hosts: [external.outside.svc.cluster.local]
                    gateways: [istio-egressgateway, mesh]
                    http:
                    - match: [{gateways: [mesh], port: 80}]
                      route:
                      - destination:
                          host: istio-egressgateway.istio-system.svc.cluster.local
                          port: {number: 80}
                    - match: [{gateways: [istio-egressgateway], port: 80}]
                      route:
                      - destination: {host: external.outside.svc.cluster.local, port: {number: 80}}
                    """,
                ),
            ),
        )
        mesh.start()
        gateway = mesh.gateway(
            "istio-egressgateway",
            labels={"istio": "egressgateway", "app": "istio-egressgateway"},
            address=egress,
        )
        listeners = gateway.envoy.admin("/listeners")
        assert f"0.0.0.0_{gateway_port}::0.0.0.0:{gateway_port}" in listeners
        sidecar = mesh.sidecar(
            "sidecar~127.0.0.1~sleep.default~default.svc.cluster.local", labels={"app": "sleep"}
        )
        counts = count_backends(sidecar.outbound_port, "external.outside.svc.cluster.local", 20)
        assert counts == {"external-v1": 20}
        # Every request passed the egress gateway's listener.
        stat = f"http.outbound_0.0.0.0_{gateway_port}.downstream_rq_2xx"
        assert gateway.envoy.stat(stat) == 20
    finally:
        mesh.stop()


def test_an_authorization_policy_selecting_the_gateway_is_enforced_at_the_gateway(
    edge: Edge,
) -> None:
    before = edge.mesh.debug.type_state(edge.gateway.node_id, "lds")["acked_version"]
    edge.mesh.write(
        "deny.yaml",
        meshes.resource(
            "AuthorizationPolicy",
            "deny-productpage-at-the-edge",
            """
            selector: {matchLabels: {istio: ingressgateway}}
            action: DENY
            rules: [{to: [{operation: {paths: [/productpage]}}]}]
            """,
            namespace="istio-system",
        ),
    )
    states = edge.mesh.debug.wait_synced(
        edge.gateway.node_id, timeout=10, newer_than={"lds": before}
    )
    try:
        status, _, body = send(edge.port, HOST, "/productpage")
        assert status == 403 and b"RBAC" in body
        assert send(edge.port, HOST, "/reviews")[0] == 200
    finally:
        edge.mesh.remove("deny.yaml")
        edge.mesh.debug.wait_synced(
            edge.gateway.node_id, timeout=10, newer_than={"lds": states["lds"]["acked_version"]}
        )
