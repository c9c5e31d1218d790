"""On-demand delivery in Istio's transparent mode, for real: the client pod's sidecar
(``ON_DEMAND: "true"``, Delta) starts with route configurations ``"<port>"`` that hold no
virtual host; the app's first call by name is captured, its Host fetched over VHDS (matched
as the full table matches it, port or not) and its cluster on demand, and it is served. A
Host no service has goes through the ``allow_any`` fallback, fetched the same way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.netns import NetnsLab
from controlplane.testing.ports import free_port
from tests.netns.test_transparent import (
    LEGACY_VIP,
    LEGACY_WEB_VIP,
    REVIEWS_VIP,
    TCP_ECHO_VIP,
    Mesh,
    legacy_registry,
    registry,
    virtual_service,
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("netns-on-demand")
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
        mesh.write("vs.yaml", virtual_service(0, 100))
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
            extra = (
                {"delta": True, "extra_metadata": {"ON_DEMAND": "true"}} if pod is client else {}
            )
            mesh.node_ids[pod.name] = pod.start_envoy(xds_port, labels=labels, **extra)
        for pod, name, port in (
            (v1, "reviews-v1", 9080),
            (v2, "reviews-v2", 9080),
            (external, "external", 8000),
            (external, "external-8001", 8001),
        ):
            pod.start_app(pod.app("serve-http", name, str(port)), name)
        for pod in (client, v1, v2):
            pod.wait_envoy_live()
        types = ("cds", "lds", "rds", "vhds")
        control_plane.debug.wait_synced(mesh.node_ids[client.name], types=types, timeout=30)
        for pod in (v1, v2):
            control_plane.debug.wait_synced(mesh.node_ids[pod.name], timeout=30)
        yield mesh
    finally:
        lab.stop()
        if control_plane is not None:
            control_plane.stop()


def test_first_call_by_name_is_captured_fetched_and_served(mesh: Mesh) -> None:
    client = mesh.node_ids[mesh.client.name]
    assert mesh.control_plane.debug.type_state(client, "vhds")["resources"] == 0
    assert mesh.call("http://reviews:9080/", 20) == {"reviews-v2": 20}
    assert mesh.call("http://reviews.default.svc.cluster.local:9080/", 5) == {"reviews-v2": 5}
    state = mesh.control_plane.debug.type_state(client, "vhds")
    assert state["resources"] == 2  # one virtual host per Host the app used


def test_a_host_no_service_has_passes_through_as_with_the_full_table(mesh: Mesh) -> None:
    # legacy-web's port 8001 has an HTTP route table; the external pod's own address on that
    # port is no service's: allow_any sends it to its original destination.
    client = mesh.node_ids[mesh.client.name]
    before = mesh.control_plane.debug.type_state(client, "vhds")["resources"]
    url = f"http://{mesh.external.ip}:8001/"
    assert mesh.call(url, 5) == {"external-8001": 5}
    # It went through the HTTP route table: its Host was fetched as one more virtual host.
    assert mesh.control_plane.debug.type_state(client, "vhds")["resources"] == before + 1
