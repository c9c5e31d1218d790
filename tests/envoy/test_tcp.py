"""VirtualService tcp and tls routes through real Envoy, with TCP backends that say who they
are (local mode: each service port the client uses gets a loopback port of its own)."""

from __future__ import annotations

import socket
import ssl
from collections import Counter

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, count_echo_backends
from tests.support import meshes

V1, V2 = "127.0.5.31", "127.0.5.32"
CLIENT = "sidecar~127.0.5.1~client.default~default.svc.cluster.local"


def registry(port: int) -> str:
    return meshes.join(
        meshes.resource(
            "Service",
            "tcp-echo",
            f"""
      selector: {{app: tcp-echo}}
      ports:
      - {{name: tcp, port: 9000, targetPort: {port}}}
      - {{name: tcp-other, port: 9001, targetPort: {port}}}
      - {{name: tls, port: 9443, targetPort: {port}}}
""",
        ),
        f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: tcp-echo-v1, namespace: default, labels: {{app: tcp-echo, version: v1}}}}
    status: {{podIP: {V1}}}
""",
        f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: tcp-echo-v2, namespace: default, labels: {{app: tcp-echo, version: v2}}}}
    status: {{podIP: {V2}}}
""",
        meshes.resource(
            "DestinationRule",
            "tcp-echo",
            """
      host: tcp-echo
      subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
    """,
        ),
    )


def tcp_virtual_service(w1: int, w2: int) -> str:
    return meshes.resource(
        "VirtualService",
        "tcp-echo",
        f"""
      hosts: [tcp-echo]
      tcp:
      - match: [{{port: 9000}}]
        route:
        - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}, weight: {w1}}}
        - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}, weight: {w2}}}
    """,
    )


@pytest.fixture
def tcp_mesh(mesh: LocalMesh) -> tuple[LocalMesh, Sidecar, dict[int, int]]:
    port = free_port()
    for name, address in (("tcp-echo-v1", V1), ("tcp-echo-v2", V2)):
        backend = TcpEchoBackend(name, address, port).start()
        mesh.backends.append(backend)  # type: ignore[arg-type]  # stopped with the mesh
    mesh.write("tcp-echo.yaml", registry(port))
    mesh.write("vs.yaml", tcp_virtual_service(80, 20))
    mesh.start()
    local = {9000: free_port(), 9001: free_port()}
    sidecar = mesh.sidecar(
        CLIENT,
        labels={"app": "client"},
        tcp_ports=",".join(f"tcp-echo:{p}={local[p]}" for p in local),
    )
    return mesh, sidecar, local


def test_tcp_weights_split_connections_between_subsets(
    tcp_mesh: tuple[LocalMesh, Sidecar, dict[int, int]],
) -> None:
    _, _, local = tcp_mesh
    counts = count_echo_backends("127.0.0.1", local[9000], 500)
    assert set(counts) == {"tcp-echo-v1", "tcp-echo-v2"}, counts
    share = 100 * counts["tcp-echo-v2"] / 500
    assert abs(share - 20) <= 6, counts


def test_tcp_weight_edit_moves_new_connections(
    tcp_mesh: tuple[LocalMesh, Sidecar, dict[int, int]],
) -> None:
    mesh, sidecar, local = tcp_mesh
    before = mesh.debug.type_state(sidecar.node_id, "lds")["acked_version"]
    mesh.write("vs.yaml", tcp_virtual_service(0, 100))
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"lds": before})
    assert count_echo_backends("127.0.0.1", local[9000], 50) == {"tcp-echo-v2": 50}


def test_a_port_the_tcp_match_does_not_name_uses_the_default_cluster(
    tcp_mesh: tuple[LocalMesh, Sidecar, dict[int, int]],
) -> None:
    _, _, local = tcp_mesh
    counts = count_echo_backends("127.0.0.1", local[9001], 200)
    assert counts["tcp-echo-v1"] > 40 and counts["tcp-echo-v2"] > 40, counts


def client_hello(server_name: str) -> bytes:
    """The first flight of a TLS handshake with ``server_name`` as SNI."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def greeted_by(port: int, server_name: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client_hello(server_name))
        return sock.recv(1024).decode().strip()


def test_tls_routes_pick_the_destination_by_sni(mesh: LocalMesh) -> None:
    port = free_port()
    for name, address in (("tls-v1", V1), ("tls-v2", V2)):
        backend = TcpEchoBackend(name, address, port, greet_only=True).start()
        mesh.backends.append(backend)  # type: ignore[arg-type]
    mesh.write("tcp-echo.yaml", registry(port))
    mesh.write(
        "vs.yaml",
        meshes.resource(
            "VirtualService",
            "tcp-echo",
            """
          hosts: [tcp-echo, "*.tcp-echo.default.svc.cluster.local"]
          tls:
          - match: [{sniHosts: [v1.tcp-echo.default.svc.cluster.local], port: 9443}]
            route: [{destination: {host: tcp-echo, port: {number: 9443}, subset: v1}}]
          - match: [{sniHosts: ["*.tcp-echo.default.svc.cluster.local"]}]
            route: [{destination: {host: tcp-echo, port: {number: 9443}, subset: v2}}]
        """,
        ),
    )
    mesh.start()
    local = free_port()
    mesh.sidecar(CLIENT, labels={"app": "client"}, tcp_ports=f"tcp-echo:9443={local}")
    assert Counter(
        greeted_by(local, "v1.tcp-echo.default.svc.cluster.local") for _ in range(20)
    ) == {"tls-v1": 20}
    assert Counter(
        greeted_by(local, "v9.tcp-echo.default.svc.cluster.local") for _ in range(20)
    ) == {"tls-v2": 20}
    # No tls route matches: the service's own cluster, every pod.
    other = Counter(greeted_by(local, "elsewhere.example") for _ in range(60))
    assert set(other) == {"tls-v1", "tls-v2"}, other
