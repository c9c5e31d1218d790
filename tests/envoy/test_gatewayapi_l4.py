"""TLSRoute and TCPRoute through a real gateway Envoy (file mode): a Gateway API Gateway with
a TLS Passthrough listener and a TCP listener; TLSRoutes send each SNI name to a TLS server
written here (the client completes its handshake with the backend: it sees the backend's own
certificate), a TCPRoute sends connections to TCP echo servers by weight. Status as the
specification defines it (route parents, listeners' attachedRoutes and supportedKinds)."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controlplane.testing.mesh import GatewayProxy, LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, count_echo_backends, echo_once
from tests.envoy.test_gatewayapi import gateway_api, wait_until
from tests.support import meshes, pki

LABELS = {"gateway.networking.k8s.io/gateway-name": "edge-l4"}
TLS_A, TLS_B = "127.0.0.91", "127.0.0.92"
TCP_V1, TCP_V2 = "127.0.0.93", "127.0.0.94"
HOST_A, HOST_B = "a.tls.example.com", "b.tls.example.com"


class TlsNameServer:
    """A TLS server with its own certificate: after the handshake it answers each line with
    ``<name> <line>``, so a client knows who terminated its TLS."""

    def __init__(self, name: str, host: str, port: int, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(f"{name} ".encode() + line)
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self) -> tuple[Any, Any]:
                raw, address = self.socket.accept()
                return context.wrap_socket(raw, server_side=True), address

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tls_exchange(port: int, sni: str, cafile: Path) -> tuple[str, str] | None:
    """(subject of the certificate the client verified, the reply line) through the gateway
    with SNI ``sni``; None when no verified handshake completes."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
                tls.sendall(b"hello\n")
                reply = tls.recv(4096).decode().strip()
    except (OSError, ssl.SSLError):
        return None
    assert der is not None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string(), reply


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class L4Edge:
    mesh: LocalMesh
    gateway: GatewayProxy
    tls_port: int
    tcp_port: int
    cafile: Path

    def status(self, what: str) -> dict[str, Any]:
        found: dict[str, Any] = self.mesh.debug.get("/debug/gateway_api_status")[what]
        return found

    def rewrite(self, name: str, text: str) -> None:
        before = self.mesh.debug.type_state(self.gateway.node_id, "lds")["acked_version"]
        self.mesh.write(name, text)
        self.mesh.debug.wait_synced(
            self.gateway.node_id, ("cds", "eds", "lds"), timeout=10, newer_than={"lds": before}
        )


def tcp_route(weights: tuple[int, int] = (1, 0), extra: str = "") -> str:
    return gateway_api(
        "TCPRoute",
        "echo",
        f"""
        parentRefs: [{{name: edge-l4, sectionName: tcp}}]
        rules:
        - backendRefs:
          - {{name: tcp-v1, port: 7000, weight: {weights[0]}}}
          - {{name: tcp-v2, port: 7000, weight: {weights[1]}}}
          {extra}
        """,
    )


@pytest.fixture(scope="module")
def l4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[L4Edge]:
    workdir = tmp_path_factory.mktemp("gwapi-l4")
    mesh = LocalMesh(workdir)
    servers: list[TlsNameServer] = []
    echoes: list[TcpEchoBackend] = []
    try:
        ca = pki.current_ca("backends-ca")
        cafile = workdir / "ca.pem"
        cafile.write_text(pki.pem(ca[0]))
        target = free_port()
        for name, ip, host in (("tls-a", TLS_A, HOST_A), ("tls-b", TLS_B, HOST_B)):
            cert, key = pki.make_leaf(ca, dns_names=[host], common_name=host)
            (workdir / f"{name}.pem").write_text(pki.pem(cert))
            (workdir / f"{name}.key").write_text(pki.key_pem(key))
            servers.append(
                TlsNameServer(name, ip, target, workdir / f"{name}.pem", workdir / f"{name}.key")
            )
        echoes = [
            TcpEchoBackend("tcp-v1", TCP_V1, target).start(),
            TcpEchoBackend("tcp-v2", TCP_V2, target).start(),
        ]
        port_spec = [{"name": "tcp", "port": 7000, "targetPort": target}]
        mesh.write(
            "backends.yaml",
            meshes.join(
                *(
                    doc
                    for name, ip in (
                        ("tls-a", TLS_A),
                        ("tls-b", TLS_B),
                        ("tcp-v1", TCP_V1),
                        ("tcp-v2", TCP_V2),
                    )
                    for doc in (
                        meshes.service(name, ports=port_spec),
                        meshes.pod(name, ip, app=name),
                    )
                )
            ),
        )
        tls_port, tcp_port = free_port(), free_port()
        mesh.write(
            "gateway.yaml",
            gateway_api(
                "Gateway",
                "edge-l4",
                f"""
                gatewayClassName: istio
                listeners:
                - name: tls
                  port: {tls_port}
                  protocol: TLS
                  hostname: "*.tls.example.com"
                  tls: {{mode: Passthrough}}
                - name: tcp
                  port: {tcp_port}
                  protocol: TCP
                """,
            ),
        )
        mesh.write(
            "tls-routes.yaml",
            meshes.join(
                *(
                    gateway_api(
                        "TLSRoute",
                        name,
                        f"""
                        parentRefs: [{{name: edge-l4, sectionName: tls}}]
                        hostnames: [{host}]
                        rules: [{{backendRefs: [{{name: {name}, port: 7000}}]}}]
                        """,
                    )
                    for name, host in (("tls-a", HOST_A), ("tls-b", HOST_B))
                )
            ),
        )
        mesh.write("tcp-route.yaml", tcp_route())
        mesh.start()
        # Only TLS and TCP listeners: no route configuration to wait for.
        proxy = mesh.gateway("edge-l4", namespace="default", labels=LABELS, wait=False)
        mesh.debug.wait_synced(proxy.node_id, types=("cds", "eds", "lds"), timeout=30)
        proxy.envoy.wait_live()
        for port in (tls_port, tcp_port):  # an ACKed listener may still be warming
            wait_until(lambda p=port: _accepts(p), f"listener {port}")
        yield L4Edge(mesh, proxy, tls_port, tcp_port, cafile)
    finally:
        mesh.stop()
        for server in servers:
            server.stop()
        for echo in echoes:
            echo.stop()


def test_a_tls_route_passes_tls_through_by_sni_to_the_backend_that_terminates_it(
    l4: L4Edge,
) -> None:
    # The client verifies the backend's own certificate (the gateway holds no key).
    assert tls_exchange(l4.tls_port, HOST_A, l4.cafile) == (f"CN={HOST_A}", "tls-a hello")
    assert tls_exchange(l4.tls_port, HOST_B, l4.cafile) == (f"CN={HOST_B}", "tls-b hello")


def test_an_sni_name_no_tls_route_names_is_not_forwarded(l4: L4Edge) -> None:
    assert tls_exchange(l4.tls_port, "c.tls.example.com", l4.cafile) is None


def test_the_tls_routes_are_accepted_and_counted_on_their_listener(l4: L4Edge) -> None:
    parent = l4.status("TLSRoute default/tls-a")["parents"][0]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}
    assert conditions == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    listeners = {
        entry["name"]: entry
        for entry in l4.status("KubernetesGateway default/edge-l4")["listeners"]
    }
    assert listeners["tls"]["attachedRoutes"] == 2
    assert listeners["tls"]["supportedKinds"] == [
        {"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}
    ]
    assert listeners["tcp"]["attachedRoutes"] == 1
    assert listeners["tcp"]["supportedKinds"] == [
        {"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}
    ]


def test_a_tcp_route_forwards_connections_to_its_backend(l4: L4Edge) -> None:
    assert echo_once("127.0.0.1", l4.tcp_port) == "tcp-v1 hello"


def test_a_tcp_route_splits_connections_by_weight(l4: L4Edge) -> None:
    l4.rewrite("tcp-route.yaml", tcp_route((3, 1)))
    try:
        counts = count_echo_backends("127.0.0.1", l4.tcp_port, 200)
        assert set(counts) == {"tcp-v1", "tcp-v2"}, counts
        assert 0.6 <= counts["tcp-v1"] / 200 <= 0.9, counts
    finally:
        l4.rewrite("tcp-route.yaml", tcp_route())


def test_a_tcp_backend_that_does_not_exist_refuses_its_connections(l4: L4Edge) -> None:
    """A backendRef to a missing Service: ResolvedRefs False/BackendNotFound, and its share
    of connections is refused (the others still flow)."""
    l4.rewrite("tcp-route.yaml", tcp_route((1, 0), "- {name: missing, port: 7000, weight: 1}"))
    try:
        parent = l4.status("TCPRoute default/echo")["parents"][0]
        resolved = {c["type"]: c for c in parent["conditions"]}["ResolvedRefs"]
        assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
        assert "spec.rules[0].backendRefs[2]" in resolved["message"]
        counts: Counter[str] = count_echo_backends("127.0.0.1", l4.tcp_port, 60)
        assert set(counts) == {"tcp-v1", "error"}, counts
    finally:
        l4.rewrite("tcp-route.yaml", tcp_route())


def test_a_tls_route_whose_hostname_no_listener_allows_is_not_attached(l4: L4Edge) -> None:
    l4.mesh.write(
        "stray.yaml",
        gateway_api(
            "TLSRoute",
            "stray",
            """
            parentRefs: [{name: edge-l4, sectionName: tls}]
            hostnames: [a.other.example.org]
            rules: [{backendRefs: [{name: tls-a, port: 7000}]}]
            """,
        ),
    )
    # Nothing changes for the proxy: wait for the route's status instead.
    wait_until(
        lambda: "TLSRoute default/stray" in l4.mesh.debug.get("/debug/gateway_api_status"),
        "the stray TLSRoute's status",
    )
    parent = l4.status("TLSRoute default/stray")["parents"][0]
    accepted = {c["type"]: c for c in parent["conditions"]}["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingListenerHostname")
    assert tls_exchange(l4.tls_port, "a.other.example.org", l4.cafile) is None
