"""ServiceEntry and WorkloadEntry through a real Envoy (local mode): egress to servers on
loopback (127.0.13.0/24) through STATIC endpoints and through DNS resolution of ``localhost``,
VirtualService and DestinationRule on an entry's host, SNI routing over TLS hosts that share
a port, and a WorkloadEntry serving as an endpoint of a Kubernetes Service."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend
from controlplane.testing.traffic import count_backends, send
from tests.envoy.test_tcp import client_hello
from tests.support import meshes

CLIENT = "sidecar~127.0.13.1~client.default~default.svc.cluster.local"
API_V1, API_V2 = "127.0.13.11", "127.0.13.12"
VM = "127.0.13.21"
TLS_A, TLS_B = "127.0.13.31", "127.0.13.32"
TLS_PORT = 9443


def entries(http_port: int, dns_port: int, tls_port: int) -> str:
    return meshes.join(
        # STATIC: two endpoints with labels, on a port of their own (endpoint ports).
        meshes.resource(
            "ServiceEntry",
            "api",
            f"""
      hosts: [api.external.test]
      location: MESH_EXTERNAL
      resolution: STATIC
      ports: [{{number: 80, name: http, protocol: HTTP}}]
      endpoints:
      - {{address: {API_V1}, ports: {{http: {http_port}}}, labels: {{version: v1}}}}
      - {{address: {API_V2}, ports: {{http: {http_port}}}, labels: {{version: v2}}}}
""",
        ),
        # DNS: the proxy resolves the endpoint's name itself (localhost -> 127.0.0.1).
        meshes.resource(
            "ServiceEntry",
            "dns-api",
            f"""
      hosts: [dns.external.test]
      resolution: DNS
      ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {dns_port}}}]
      endpoints: [{{address: localhost}}]
""",
        ),
        # Two TLS hosts on one port, no addresses: the sidecar routes by SNI.
        *(
            meshes.resource(
                "ServiceEntry",
                name,
                f"""
      hosts: [{name}.tls.test]
      resolution: STATIC
      ports: [{{number: {TLS_PORT}, name: tls, protocol: TLS, targetPort: {tls_port}}}]
      endpoints: [{{address: {address}}}]
""",
            )
            for name, address in (("a", TLS_A), ("b", TLS_B))
        ),
        # A Kubernetes Service whose only endpoint is a VM.
        meshes.resource(
            "Service",
            "vm-app",
            f"""
      selector: {{app: vm-app}}
      ports: [{{name: http, port: 8080, targetPort: {http_port}}}]
""",
        ),
        meshes.resource(
            "WorkloadEntry",
            "vm-1",
            f"""
      address: {VM}
      labels: {{app: vm-app, version: vm}}
      serviceAccount: vm-app
""",
        ),
    )


@pytest.fixture(scope="module")
def egress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, Sidecar, int]]:
    mesh = LocalMesh(tmp_path_factory.mktemp("service-entry"))
    try:
        http_port, dns_port, tls_port = free_port(), free_port(), free_port()
        mesh.backend("api-v1", API_V1, http_port)
        mesh.backend("api-v2", API_V2, http_port)
        mesh.backend("dns-api", "127.0.0.1", dns_port)
        mesh.backend("vm-1", VM, http_port)
        for name, address in (("tls-a", TLS_A), ("tls-b", TLS_B)):
            backend = TcpEchoBackend(name, address, tls_port, greet_only=True).start()
            mesh.backends.append(backend)  # type: ignore[arg-type]  # stopped with the mesh
        mesh.write("entries.yaml", entries(http_port, dns_port, tls_port))
        mesh.start()
        local_tls = free_port()
        sidecar = mesh.sidecar(
            CLIENT, labels={"app": "client"}, tcp_ports=f"a.tls.test:{TLS_PORT}={local_tls}"
        )
        yield mesh, sidecar, local_tls
    finally:
        mesh.stop()


def greeted_by(port: int, server_name: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client_hello(server_name))
        return sock.recv(1024).decode().strip()


def clusters(sidecar: Sidecar) -> dict[str, dict[str, object]]:
    """The sidecar's dynamic clusters by name, from its own admin config dump."""
    found = sidecar.envoy.admin_json("/config_dump?resource=dynamic_active_clusters")["configs"]
    return {c["cluster"]["name"]: c["cluster"] for c in found}


def test_static_entry_reaches_its_endpoints_by_host(
    egress: tuple[LocalMesh, Sidecar, int],
) -> None:
    _, sidecar, _ = egress
    counts = count_backends(sidecar.outbound_port, "api.external.test", 40)
    assert set(counts) == {"api-v1", "api-v2"}, counts


def test_dns_entry_is_resolved_by_the_proxy(egress: tuple[LocalMesh, Sidecar, int]) -> None:
    _, sidecar, _ = egress
    status, _, body = send(sidecar.outbound_port, "dns.external.test")
    assert status == 200 and json.loads(body)["name"] == "dns-api", body
    found = clusters(sidecar)["outbound|80||dns.external.test"]
    assert found["type"] == "STRICT_DNS"
    address = found["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["address"] == "localhost"


def test_virtual_service_and_subsets_apply_to_an_entry_host(
    egress: tuple[LocalMesh, Sidecar, int],
) -> None:
    mesh, sidecar, _ = egress
    before = mesh.debug.type_state(sidecar.node_id, "rds")["acked_version"]
    mesh.write(
        "api-routing.yaml",
        meshes.join(
            meshes.resource(
                "DestinationRule",
                "api",
                """
      host: api.external.test
      subsets: [{name: v2, labels: {version: v2}}]
""",
            ),
            meshes.resource(
                "VirtualService",
                "api",
                """
      hosts: [api.external.test]
      http: [{route: [{destination: {host: api.external.test, subset: v2}}]}]
""",
            ),
        ),
    )
    try:
        mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
        assert count_backends(sidecar.outbound_port, "api.external.test", 20) == {"api-v2": 20}
    finally:
        mesh.remove("api-routing.yaml")


def test_tls_hosts_sharing_a_port_are_routed_by_sni(
    egress: tuple[LocalMesh, Sidecar, int],
) -> None:
    _, _, local_tls = egress
    assert Counter(greeted_by(local_tls, "a.tls.test") for _ in range(10)) == {"tls-a": 10}
    assert Counter(greeted_by(local_tls, "b.tls.test") for _ in range(10)) == {"tls-b": 10}
    # A name no entry claims is refused (closed or reset), not sent to either.
    with socket.create_connection(("127.0.0.1", local_tls), timeout=5) as sock:
        sock.sendall(client_hello("unknown.tls.test"))
        try:
            answer = sock.recv(1024)
        except ConnectionResetError:
            answer = b""
        assert answer == b""


def test_workload_entry_serves_as_an_endpoint_of_a_service(
    egress: tuple[LocalMesh, Sidecar, int],
) -> None:
    _, sidecar, _ = egress
    assert count_backends(sidecar.outbound_port, "vm-app:8080", 10) == {"vm-1": 10}
