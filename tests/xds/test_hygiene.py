"""What a hostile client sends is answered and logged safely: unknown type URLs, forged and
oversized node ids; and a second control plane cannot take the xDS port."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.compile.resources import CLUSTER, ROUTE
from controlplane.testing.ads_client import AdsConnection, delta_request, node, sotw_request
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.ports import free_port
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, local_node

UNKNOWN = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"


def unknown_count(cp: ControlPlane, protocol: str) -> float:
    return cp.xds.metrics.unknown_types.value(protocol)


async def test_sotw_unknown_type_is_answered_empty_and_counted(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(UNKNOWN, ["x"], node_message=local_node()))
        answer = await conn.recv(timeout=5)
        assert answer.type_url == UNKNOWN
        assert list(answer.resources) == []
        assert answer.nonce
        assert unknown_count(control_plane, "sotw") == 1
        metrics = control_plane.xds.metrics.render()
        assert 'controlplane_xds_unknown_type_requests_total{protocol="sotw"} 1' in metrics
        # Its ACK is not answered again (no loop), and the stream still serves known types.
        await conn.send(sotw_request(UNKNOWN, ["x"], nonce=answer.nonce))
        await conn.send(sotw_request(CLUSTER))
        cds = await conn.recv(timeout=5)
        assert cds.type_url == CLUSTER and len(cds.resources) > 0
        await conn.expect_nothing(0.2)
        assert unknown_count(control_plane, "sotw") == 2


async def test_delta_unknown_type_is_answered_empty_and_counted(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await conn.send(delta_request(UNKNOWN, ["x"], node_message=local_node()))
        answer = await conn.recv(timeout=5)
        assert answer.type_url == UNKNOWN
        assert list(answer.resources) == [] and list(answer.removed_resources) == []
        assert unknown_count(control_plane, "delta") == 1
        await conn.send(delta_request(UNKNOWN, nonce=answer.nonce))
        await conn.send(delta_request(CLUSTER))
        cds = await conn.recv(timeout=5)
        assert cds.type_url == CLUSTER and len(cds.resources) > 0
        await conn.expect_nothing(0.2)


def _client_text_in_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("controlplane")]


async def test_a_newline_in_a_node_id_cannot_forge_a_log_line(
    control_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controlplane")
    control_plane.apply(MESH)
    forged = local_node().id + "\n2026-12-07 12:00:00,000 ERROR   controlplane: forged\r\x1b[2J"
    message = node(forged, {"NAMESPACE": "default"})
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(CLUSTER, node_message=message))
        cds = await conn.recv(timeout=5)
        # A NACK message is the client's text too.
        await conn.send(
            sotw_request(CLUSTER, nonce=cds.nonce, error="bad\nERROR controlplane: forged")
        )
        await conn.send(sotw_request(UNKNOWN + "\nforged"))
        await conn.recv(timeout=5)
    lines = _client_text_in_logs(caplog)
    mentions = [m for m in lines if "forged" in m]
    assert len(mentions) >= 3, lines  # connected, NACK, unknown type
    for text in mentions:
        assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
    assert any("\\nERROR controlplane: forged" in m for m in mentions)


async def test_a_megabyte_node_id_is_not_logged_whole(
    control_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controlplane")
    control_plane.apply(MESH)
    huge = "sidecar~127.0.0.1~" + "a" * 1_000_000 + ".default~default.svc.cluster.local"
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(CLUSTER, node_message=node(huge, {"NAMESPACE": "default"})))
        cds = await conn.recv(timeout=10)
        await conn.send(sotw_request(CLUSTER, nonce=cds.nonce, error="x" * 1_000_000))
        await conn.send(sotw_request(ROUTE, ["a"]))
        await conn.recv(timeout=10)
    lines = _client_text_in_logs(caplog)
    assert any("aaaa" in m for m in lines)  # the node was logged...
    longest = max(len(m) for m in lines)
    assert longest < 4096, longest  # ...but capped, saying how long it was
    assert any(f"[{len(huge)} characters]" in m for m in lines)


def test_a_second_control_plane_cannot_take_the_xds_port(tmp_path: Path) -> None:
    """Two real processes: grpc would set SO_REUSEPORT and let both serve one port."""
    config = tmp_path / "config"
    config.mkdir()
    xds_port = free_port()
    first = ControlPlaneProcess(config, xds_port, free_port(), tmp_path / "first.log")
    with first:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "controlplane",
                "serve",
                "--config-dir",
                str(config),
                "--xds-port",
                str(xds_port),
                "--debug-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        errors = second.stderr.strip().splitlines()
        assert errors == [
            f"controlplane serve: cannot listen for xDS on 127.0.0.1:{xds_port}: "
            "Address already in use"
        ], second.stderr
        assert first.process is not None and first.process.poll() is None
        # The same for the debug port.
        third = subprocess.run(
            [
                sys.executable,
                "-m",
                "controlplane",
                "serve",
                "--config-dir",
                str(config),
                "--xds-port",
                str(free_port()),
                "--debug-port",
                str(first.debug_port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert third.returncode != 0
        assert "Traceback" not in third.stderr
        assert third.stderr.strip().splitlines()[-1] == (
            f"controlplane serve: cannot listen for debug on 127.0.0.1:{first.debug_port}: "
            "Address already in use"
        )
