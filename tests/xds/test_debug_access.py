"""The debug port: probes and metrics for anyone who reaches it, every proxy's configuration
only for loopback clients or the holder of the debug token; loopback by default."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controlplane.cli.main import parser
from controlplane.testing.ads_client import AdsConnection
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.ports import free_port
from controlplane.xds.debug import DebugServer
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, local_node
from tests.xds.test_sotw import connect_all


def host_address() -> str:
    """An address of this host that is not loopback (what a pod IP is to a probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            pytest.skip("no non-loopback address on this host")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no non-loopback address on this host")
    return address


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_debug_endpoints_answer_loopback_or_the_token_only(
    control_plane: ControlPlane,
) -> None:
    import asyncio

    address = host_address()
    debug = DebugServer(control_plane.xds, control_plane.hub, debug_token="s3cret-token")
    port = await debug.start("0.0.0.0", free_port())
    control_plane.apply(MESH)
    try:
        async with AdsConnection(control_plane.target) as conn:
            await connect_all(control_plane, conn)
            node_id = local_node().id
            dump = f"/debug/config_dump?proxy={urllib.request.quote(node_id)}"

            def check() -> None:
                remote = f"http://{address}:{port}"
                # Probes and Prometheus reach the pod IP.
                assert get(remote + "/healthz")[0] == 200
                assert get(remote + "/ready")[0] == 200
                status, metrics = get(remote + "/metrics")
                assert status == 200 and "controlplane_xds_pushes_total" in metrics
                # Every proxy's configuration does not, without the token.
                for path in (dump, "/debug/syncz", "/debug/status", "/debug/push_status"):
                    status, body = get(remote + path)
                    assert status == 403, (path, body)
                    assert node_id not in body
                assert get(remote + dump, token="wrong")[0] == 403
                status, body = get(remote + dump, token="s3cret-token")
                assert status == 200 and node_id in body
                # Loopback (kubectl port-forward) needs no token.
                status, body = get(f"http://127.0.0.1:{port}{dump}")
                assert status == 200 and node_id in body

            await asyncio.to_thread(check)
    finally:
        await debug.stop()


def test_run_and_serve_bind_the_debug_port_to_loopback_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    top = parser()
    for argv in (["run"], ["serve", "--config-dir", "."]):
        args = top.parse_args(argv)
        assert args.debug_host == "127.0.0.1", argv
        assert args.debug_token_file is None
        with pytest.raises(SystemExit):
            top.parse_args([argv[0], "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "--debug-host" in shown and "loopback clients only" in shown


def test_serve_debug_port_is_not_reachable_from_elsewhere(tmp_path: Path) -> None:
    address = host_address()
    config = tmp_path / "config"
    config.mkdir()
    with ControlPlaneProcess(config, free_port(), free_port(), tmp_path / "cp.log") as cp:
        assert get(f"http://127.0.0.1:{cp.debug_port}/healthz")[0] == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://{address}:{cp.debug_port}/healthz", timeout=5)
