"""Transparent interception for real: each pod is a network namespace with the injector's
iptables rules and a real Envoy running as UID 1337; the apps know nothing about the proxy.

Name resolution: each pod gets its own /etc/hosts (``/etc/netns/<netns>/hosts``, bind-mounted
by ``ip netns exec``) mapping ``reviews`` to the service VIP, as cluster DNS would; the VIP is
routed nowhere, so only the capture rules and the sidecar make the call work.
"""

from __future__ import annotations

import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.netns import NetnsLab, NetnsPod
from controlplane.testing.pod_apps import parse_counts
from controlplane.testing.ports import free_port
from tests.support import meshes

REVIEWS_VIP = "10.96.5.10"
TCP_ECHO_VIP = "10.96.5.20"
LEGACY_VIP = "10.96.5.30"
LEGACY_WEB_VIP = "10.96.5.31"


@dataclass
class Mesh:
    lab: NetnsLab
    control_plane: ControlPlaneProcess
    config_dir: Path
    client: NetnsPod
    v1: NetnsPod
    v2: NetnsPod
    external: NetnsPod
    node_ids: dict[str, str]

    def write(self, name: str, text: str) -> None:
        tmp = self.config_dir / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text))
        tmp.rename(self.config_dir / name)

    def call(self, url: str, count: int, *headers: str) -> dict[str, int]:
        result = self.client.run(
            self.client.python(
                "-m", "controlplane.testing.pod_apps", "count-http", url, str(count), *headers
            ),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return parse_counts(result.stdout)


def legacy_registry(external: NetnsPod) -> str:
    """Services on a pod without a sidecar whose ports declare no protocol: sniffed."""
    return meshes.join(
        meshes.service("legacy", 7000, port_name=None, cluster_ip=LEGACY_VIP, app="external"),
        meshes.service(
            "legacy-web", 8001, port_name=None, cluster_ip=LEGACY_WEB_VIP, app="external"
        ),
        meshes.pod("external", external.ip, app="external"),
    )


def registry(v1: NetnsPod, v2: NetnsPod) -> str:
    return meshes.join(
        meshes.service("reviews", cluster_ip=REVIEWS_VIP),
        meshes.subsets("reviews"),
        meshes.service("tcp-echo", 9000, port_name="tcp", cluster_ip=TCP_ECHO_VIP, app="reviews"),
        meshes.split("tcp-echo", {"v1": 30, "v2": 70}, protocol="tcp"),
        meshes.subsets("tcp-echo"),
        *(
            meshes.pod(
                f"reviews-{version}",
                pod.ip,
                app="reviews",
                version=version,
                annotations=meshes.INJECTED,
            )
            for version, pod in (("v1", v1), ("v2", v2))
        ),
    )


def virtual_service(w1: int, w2: int) -> str:
    return meshes.split("reviews", {"v1": w1, "v2": w2}, first=[meshes.jason_to_v2()])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("netns")
    config_dir = workdir / "config"
    config_dir.mkdir()
    lab = NetnsLab().start()
    control_plane: ControlPlaneProcess | None = None
    try:
        client, v1, v2, external = (
            lab.pod("productpage"),
            lab.pod("reviews-v1"),
            lab.pod("reviews-v2"),
            lab.pod("external"),
        )
        mesh = Mesh(lab, None, config_dir, client, v1, v2, external, {})  # type: ignore[arg-type]
        mesh.write("reviews.yaml", registry(v1, v2))
        mesh.write("vs.yaml", virtual_service(75, 25))
        mesh.write("legacy.yaml", legacy_registry(external))
        xds_port, debug_port = free_port(), free_port()
        control_plane = ControlPlaneProcess(
            config_dir, xds_port, debug_port, workdir / "cp.log", extra_args=["--host", "0.0.0.0"]
        ).start()
        mesh.control_plane = control_plane
        for pod, labels in (
            (client, {"app": "productpage"}),
            (v1, {"app": "reviews", "version": "v1"}),
            (v2, {"app": "reviews", "version": "v2"}),
        ):
            pod.redirect()
            pod.set_hosts(
                {
                    "reviews reviews.default reviews.default.svc.cluster.local": REVIEWS_VIP,
                    "tcp-echo tcp-echo.default": TCP_ECHO_VIP,
                    "legacy": LEGACY_VIP,
                    "legacy-web": LEGACY_WEB_VIP,
                }
            )
            mesh.node_ids[pod.name] = pod.start_envoy(xds_port, labels=labels)
        for pod, name, port in (
            (v1, "reviews-v1", 9080),
            (v2, "reviews-v2", 9080),
            (external, "external", 8000),
            (external, "external-8001", 8001),
        ):
            pod.start_app(pod.app("serve-http", name, str(port)), name)
        for pod, name in ((v1, "echo-v1"), (v2, "echo-v2"), (external, "echo-external")):
            pod.start_app(
                pod.app(
                    "serve-tcp",
                    name,
                    "7000" if pod is external else "9000",
                ),
                "echo",
            )
        for pod in (client, v1, v2):
            pod.wait_envoy_live()
            control_plane.debug.wait_synced(mesh.node_ids[pod.name], timeout=30)
        yield mesh
    finally:
        lab.stop()
        if control_plane is not None:
            control_plane.stop()


def test_capture_rules_are_installed_in_the_pod(mesh: Mesh) -> None:
    rules = mesh.client.run(["iptables-save", "-t", "nat"]).stdout
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
    assert "--uid-owner 1337" in rules


def test_app_calling_reviews_by_name_is_split_by_the_virtual_service(mesh: Mesh) -> None:
    counts = mesh.call("http://reviews:9080/", 400)
    assert set(counts) == {"reviews-v1", "reviews-v2"}, counts
    share = 100 * counts["reviews-v2"] / sum(counts.values())
    assert abs(share - 25) <= 7, counts


def test_header_match_sends_jason_to_v2(mesh: Mesh) -> None:
    assert mesh.call("http://reviews:9080/", 40, "end-user:jason") == {"reviews-v2": 40}


def shared_route_responses(mesh: Mesh) -> float:
    """How many route responses were written from bytes encoded for another stream."""
    url = f"{mesh.control_plane.debug.base}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    prefix = 'controlplane_xds_shared_responses_total{type="rds"} '
    return sum(float(line[len(prefix) :]) for line in lines if line.startswith(prefix))


def test_weight_change_is_followed_without_touching_the_app(mesh: Mesh) -> None:
    debug = mesh.control_plane.debug
    before = {n: debug.type_state(n, "rds")["acked_version"] for n in mesh.node_ids.values()}
    shared = shared_route_responses(mesh)
    mesh.write("vs.yaml", virtual_service(0, 100))
    for node_id, version in before.items():
        debug.wait_synced(node_id, timeout=15, newer_than={"rds": version})
    try:
        assert mesh.call("http://reviews:9080/", 50) == {"reviews-v2": 50}
        # The three workloads' Envoys hold one compiled outbound route table: it was encoded
        # once and the same bytes written to all three, and each ACKed them.
        assert shared_route_responses(mesh) >= shared + 2
    finally:
        mesh.write("vs.yaml", virtual_service(75, 25))
        time.sleep(0.5)


def test_inbound_traffic_reaches_the_app_through_virtual_inbound(mesh: Mesh) -> None:
    stat = "cluster.inbound|9080||.upstream_rq_total"
    before = mesh.v1.stat(stat)
    # From a pod without a sidecar straight to the pod address: captured on the way in.
    result = mesh.external.run(mesh.external.app("count-http", f"http://{mesh.v1.ip}:9080/", "10"))
    assert parse_counts(result.stdout) == {"reviews-v1": 10}, result.stderr
    assert mesh.v1.stat(stat) - before == 10
    assert mesh.v1.stat("listener.0.0.0.0_15006.downstream_cx_total") >= 10


def test_unknown_destination_passes_through_the_sidecar(mesh: Mesh) -> None:
    stat = "cluster.PassthroughCluster.upstream_cx_total"
    before = mesh.client.stat(stat)
    counts = mesh.call(f"http://{mesh.external.ip}:8000/", 5)
    assert counts == {"external": 5}
    assert mesh.client.stat(stat) - before == 5


def test_unknown_host_on_a_mesh_http_port_goes_to_allow_any(mesh: Mesh) -> None:
    # Port 9080 is an HTTP port of the mesh: the HCM sees a Host no service claims.
    mesh.external.start(
        mesh.external.python(
            "-m", "controlplane.testing.pod_apps", "serve-http", "external-9080", "9080"
        ),
        "app9080",
    )
    time.sleep(0.5)
    stat = "cluster.PassthroughCluster.upstream_rq_total"
    before = mesh.client.stat(stat)
    counts = mesh.call(f"http://{mesh.external.ip}:9080/", 5)
    assert counts == {"external-9080": 5}
    assert mesh.client.stat(stat) - before == 5


def test_running_the_init_rules_twice_leaves_the_same_rules(mesh: Mesh) -> None:
    def rules() -> list[str]:
        text = mesh.client.run(["iptables-save", "-t", "nat"]).stdout
        return [line for line in text.splitlines() if line.startswith("-A")]

    before = rules()
    mesh.client.redirect()
    assert rules() == before
    assert mesh.call("http://reviews:9080/", 5, "end-user:jason") == {"reviews-v2": 5}


def test_tcp_connections_to_a_vip_are_split_by_the_tcp_route_weights(mesh: Mesh) -> None:
    # tcp-echo's VIP port has its own listener (10.96.5.20_9000) behind virtualOutbound; the
    # route sends to the pods' port 9000, which their sidecars take in through 15006.
    result = mesh.client.run(
        mesh.client.python(
            "-m", "controlplane.testing.pod_apps", "count-tcp", "tcp-echo", "9000", "300"
        ),
        timeout=120,
    )
    counts = parse_counts(result.stdout)
    assert set(counts) == {"echo-v1", "echo-v2"}, (counts, result.stderr)
    assert abs(100 * counts["echo-v2"] / 300 - 70) <= 8, counts
    assert mesh.client.stat(f"listener.{TCP_ECHO_VIP}_9000.downstream_cx_total") == 300
    assert mesh.v2.stat("cluster.inbound|9000||.upstream_cx_total") == counts["echo-v2"]


def test_an_undeclared_port_is_sniffed_tcp_to_the_service_and_http_through_routes(
    mesh: Mesh,
) -> None:
    # legacy:7000 and legacy-web:8001 name no protocol; the pod behind them has no sidecar.
    result = mesh.client.run(
        mesh.client.app("count-tcp", "legacy", "7000", "10"),
        timeout=60,
    )
    assert parse_counts(result.stdout) == {"echo-external": 10}, result.stderr
    assert (
        mesh.client.stat(
            "cluster.outbound|7000||legacy.default.svc.cluster.local.upstream_cx_total"
        )
        == 10
    )
    assert mesh.call("http://legacy-web:8001/", 10) == {"external-8001": 10}
    assert mesh.client.stat("http.outbound_0.0.0.0_8001.downstream_rq_total") == 10


def test_inbound_traffic_to_an_undeclared_port_passes_through_to_the_app(mesh: Mesh) -> None:
    # No Service declares port 8123 of reviews-v1: virtualInbound's catch-all HTTP chain sends
    # it on to its original destination through InboundPassthroughCluster (from 127.0.0.6).
    mesh.v1.start_app(
        mesh.v1.app("serve-http", "v1-undeclared", "8123"),
        "undeclared",
    )
    stat = "cluster.InboundPassthroughCluster.upstream_rq_total"
    before = mesh.v1.stat(stat)
    result = mesh.external.run(mesh.external.app("count-http", f"http://{mesh.v1.ip}:8123/", "5"))
    assert parse_counts(result.stdout) == {"v1-undeclared": 5}, result.stderr
    assert mesh.v1.stat(stat) - before == 5


def test_a_pod_calling_its_own_service_reaches_itself_through_its_inbound_side(
    mesh: Mesh,
) -> None:
    # From reviews-v1, some of the split lands on reviews-v1 itself: its sidecar connects to its
    # own pod address over loopback, which the capture rules send to 15006 (Istio's hairpin).
    stat = "cluster.inbound|9080||.upstream_rq_total"
    before = mesh.v1.stat(stat)
    result = mesh.v1.run(mesh.v1.app("count-http", "http://reviews:9080/", "200"), timeout=120)
    counts = parse_counts(result.stdout)
    assert set(counts) == {"reviews-v1", "reviews-v2"}, (counts, result.stderr)
    assert mesh.v1.stat(stat) - before == counts["reviews-v1"]


def test_an_excluded_outbound_port_bypasses_the_sidecar(mesh: Mesh) -> None:
    stat = "cluster.PassthroughCluster.upstream_cx_total"
    mesh.client.redirect("--exclude-outbound-ports", "8000")
    try:
        before = mesh.client.stat(stat)
        assert mesh.call(f"http://{mesh.external.ip}:8000/", 5) == {"external": 5}
        assert mesh.client.stat(stat) == before  # straight out, not through Envoy
    finally:
        mesh.client.redirect()
    assert mesh.call(f"http://{mesh.external.ip}:8000/", 3) == {"external": 3}
    assert mesh.client.stat(stat) == before + 3
