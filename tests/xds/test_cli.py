"""`controlplane proxy-status` and `proxy-config` against a running control plane."""

from __future__ import annotations

import asyncio
import io
import json

import yaml

from controlplane.cli.main import main
from controlplane.compile.resources import ROUTE
from controlplane.testing.ads_client import AdsConnection, delta_request
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, RATINGS, ROUTE_NAME, canary, local_node
from tests.xds.test_delta import ack, connect_all


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it blocks on HTTP to this test's own event loop)."""
    import contextlib

    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


async def test_proxy_status_lists_each_proxy_and_explains_a_nack(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    address = f"127.0.0.1:{control_plane.debug.port}"
    async with (
        AdsConnection(control_plane.target, delta=True) as good,
        AdsConnection(control_plane.target, delta=True) as bad,
    ):
        await connect_all(good, "good")
        await connect_all(bad, "bad")
        control_plane.apply(canary(50, 50))
        await ack(good, await good.recv())
        rds = await bad.recv()
        await bad.send(delta_request(ROUTE, nonce=rds.nonce, error="weights rejected"))
        await good.expect_nothing(0.2)

        code, text, _ = await run_cli("proxy-status", "--debug-address", address)
        assert code == 0
        lines = text.splitlines()
        assert lines[0].split()[:3] == ["NODE", "ID", "IDENTITY"]
        good_line = next(line for line in lines if line.startswith(local_node("good").id))
        cells = good_line.split()[-5:]  # CDS LDS EDS RDS SDS
        assert [c.split(":")[0] for c in cells] == ["SYNCED"] * 4 + ["-"]
        rds = control_plane.stream_of(local_node("good").id).states[ROUTE]
        assert cells[3] == f"SYNCED:{rds.acked_version[:8]}"
        assert "spiffe://cluster.local/ns/default/sa/default" in good_line
        bad_line = next(line for line in lines if line.startswith(local_node("bad").id))
        bad_rds = control_plane.stream_of(local_node("bad").id).states[ROUTE]
        assert bad_line.split()[-2] == f"NACKED:{bad_rds.sent_version[:8]}"
        detail = next(line for line in lines if "rds: NACKED" in line)
        assert local_node("bad").id in detail
        assert ROUTE_NAME in detail and "weights rejected" in detail

        code, text, _ = await run_cli("proxy-status", "--debug-address", address, "-o", "json")
        assert {p["node_id"] for p in json.loads(text)} == {
            local_node("good").id,
            local_node("bad").id,
        }


async def test_proxy_config_prints_what_the_proxy_was_sent(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    address = f"127.0.0.1:{control_plane.debug.port}"
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        code, text, _ = await run_cli(
            "proxy-config", local_node().id, "--type", "endpoints", "--debug-address", address
        )
        assert code == 0
        assert RATINGS in [c["clusterName"] for c in json.loads(text)]
        code, text, _ = await run_cli(
            "proxy-config", local_node().id, "--debug-address", address, "-o", "yaml"
        )
        data = yaml.safe_load(text)
        assert data["node_id"] == local_node().id
        assert [r["name"] for r in data["routes"]] == [ROUTE_NAME]
        assert RATINGS in [c["name"] for c in data["clusters"]]
        code, _, err = await run_cli("proxy-config", "nobody", "--debug-address", address)
        assert code == 1 and "no connected proxy 'nobody'" in err
