"""Egress with transparent capture: the outbound traffic policy decides what happens to a
destination the registry does not know. REGISTRY_ONLY refuses it (502 from ``block_all`` on
an HTTP port, a closed connection from BlackHoleCluster elsewhere) while a ServiceEntry host
still passes; ALLOW_ANY passes both. The app knows nothing of the proxy: it resolves names
through its /etc/hosts and connects to the server's address."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.netns import NetnsLab, NetnsPod
from controlplane.testing.pod_apps import parse_counts
from controlplane.testing.ports import free_port
from tests.support import meshes


@dataclass
class Egress:
    mode: str
    control_plane: ControlPlaneProcess
    client: NetnsPod
    server: NetnsPod

    def call(self, url: str, count: int = 5) -> dict[str, int]:
        result = self.client.run(
            self.client.python(
                "-m", "controlplane.testing.pod_apps", "count-http", url, str(count)
            ),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return parse_counts(result.stdout)

    def tcp(self, port: int, count: int = 3) -> dict[str, int]:
        result = self.client.run(
            self.client.python(
                "-m",
                "controlplane.testing.pod_apps",
                "count-tcp",
                self.server.ip,
                str(port),
                str(count),
            ),
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return parse_counts(result.stdout)


def registry(server: NetnsPod) -> str:
    """One host outside the mesh, registered by a ServiceEntry, and its TCP port 7001 by
    address (resolution NONE: the connection goes on to its own destination); the server
    also answers under other names and on port 7000, which nothing registers."""
    return meshes.join(
        meshes.resource(
            "ServiceEntry",
            "api",
            f"""
      hosts: [api.external.test]
      location: MESH_EXTERNAL
      resolution: STATIC
      ports: [{{number: 8000, name: http, protocol: HTTP}}]
      endpoints: [{{address: {server.ip}}}]
""",
        ),
        meshes.resource(
            "ServiceEntry",
            "echo",
            f"""
      hosts: [echo.external.test]
      addresses: [{server.ip}/32]
      location: MESH_EXTERNAL
      resolution: NONE
      ports: [{{number: 7001, name: tcp, protocol: TCP}}]
""",
        ),
    )


@pytest.fixture(scope="module", params=["ALLOW_ANY", "REGISTRY_ONLY"])
def egress(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Egress]:
    mode: str = request.param
    workdir = tmp_path_factory.mktemp(f"egress-{mode.lower()}")
    config_dir = workdir / "config"
    config_dir.mkdir()
    lab = NetnsLab().start()
    control_plane: ControlPlaneProcess | None = None
    try:
        client, server = lab.pod("client"), lab.pod("server")
        (config_dir / "egress.yaml").write_text(textwrap.dedent(registry(server)))
        (config_dir / "mesh.yaml").write_text(f"outboundTrafficPolicy: {{mode: {mode}}}\n")
        xds_port, debug_port = free_port(), free_port()
        control_plane = ControlPlaneProcess(
            config_dir,
            xds_port,
            debug_port,
            workdir / "cp.log",
            extra_args=["--host", "0.0.0.0"],
        ).start()
        client.redirect()
        client.set_hosts({"api.external.test": server.ip, "unknown.external.test": server.ip})
        node_id = client.start_envoy(xds_port, labels={"app": "client"})
        server.start_app(server.app("serve-http", "server", "8000"), "http")
        server.start_app(server.app("serve-tcp", "echo", "7000"), "echo")
        server.start_app(server.app("serve-tcp", "echo-registered", "7001"), "echo-registered")
        client.wait_envoy_live()
        control_plane.debug.wait_synced(node_id, timeout=30)
        yield Egress(mode, control_plane, client, server)
    finally:
        lab.stop()
        if control_plane is not None:
            control_plane.stop()


def test_a_service_entry_host_passes_in_either_mode(egress: Egress) -> None:
    stat = "cluster.outbound|8000||api.external.test.upstream_rq_total"
    before = egress.client.stat(stat)
    assert egress.call("http://api.external.test:8000/") == {"server": 5}
    assert egress.client.stat(stat) - before == 5


def test_an_unknown_host_on_a_registered_http_port(egress: Egress) -> None:
    counts = egress.call("http://unknown.external.test:8000/")
    if egress.mode == "REGISTRY_ONLY":
        assert counts == {"502": 5}  # block_all
    else:
        assert counts == {"server": 5}  # allow_any -> PassthroughCluster


def test_an_unknown_destination_port(egress: Egress) -> None:
    # BlackHoleCluster has no hosts: each connection it takes counts as "none healthy".
    stat = "cluster.BlackHoleCluster.upstream_cx_none_healthy"
    before = egress.client.stat(stat)
    counts = egress.tcp(7000)
    if egress.mode == "REGISTRY_ONLY":
        assert counts == {"error": 3}, counts
        assert egress.client.stat(stat) - before == 3
    else:
        assert counts == {"echo": 3}


def test_a_tcp_service_entry_by_address_passes_to_its_original_destination(egress: Egress) -> None:
    stat = "cluster.outbound|7001||echo.external.test.upstream_cx_total"
    before = egress.client.stat(stat)
    assert egress.tcp(7001) == {"echo-registered": 3}
    assert egress.client.stat(stat) - before == 3  # ORIGINAL_DST, not PassthroughCluster
