"""Seeing delivery: CSDS over gRPC, Prometheus metrics, health and readiness, config dump."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2

from controlplane.compile.resources import ROUTE
from controlplane.testing.ads_client import AdsConnection, delta_request
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, ROUTE_NAME, canary, local_node, ratings_pod
from tests.xds.test_delta import ack, connect_all


async def fetch_status(cp: ControlPlane, prefix: str = "") -> csds_pb2.ClientStatusResponse:
    async with grpc.aio.insecure_channel(cp.target) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        request = csds_pb2.ClientStatusRequest()
        if prefix:
            request.node_matchers.append(
                node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(prefix=prefix))
            )
        return await stub.FetchClientStatus(request)


async def http_get(cp: ControlPlane, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{cp.debug.port}{path}") as response:
            return response.status, await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name + (f"{{{want}}}" if want else ""):
            return float(value)
    return 0.0


async def test_csds_reports_each_proxys_resources_with_ack_and_nack_state(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with (
        AdsConnection(control_plane.target, delta=True) as good,
        AdsConnection(control_plane.target, delta=True) as bad,
    ):
        await connect_all(good, "good")
        await connect_all(bad, "bad")
        control_plane.apply(canary(50, 50))
        await ack(good, await good.recv())
        rds = await bad.recv()
        await bad.send(delta_request(ROUTE, nonce=rds.nonce, error="no thanks"))
        await good.expect_nothing(0.2)

        everyone = await fetch_status(control_plane)
        assert sorted(c.node.id for c in everyone.config) == sorted(
            [local_node("bad").id, local_node("good").id]
        )
        only_good = await fetch_status(control_plane, prefix="sidecar~127.0.6.100~good")
        (config,) = only_good.config
        routes = [g for g in config.generic_xds_configs if g.type_url == ROUTE]
        assert [g.name for g in routes] == [ROUTE_NAME]
        assert routes[0].config_status == csds_pb2.SYNCED
        assert routes[0].client_status == dump.ACKED
        assert routes[0].xds_config.type_url == ROUTE  # the resource itself is included
        assert {g.type_url for g in config.generic_xds_configs} >= {ROUTE}

        (bad_config,) = (await fetch_status(control_plane, prefix="sidecar~127.0.6.100~bad")).config
        (bad_route,) = [g for g in bad_config.generic_xds_configs if g.type_url == ROUTE]
        assert bad_route.config_status == csds_pb2.ERROR
        assert bad_route.client_status == dump.NACKED
        assert bad_route.error_state.details == "no thanks"


async def test_csds_stream_answers_each_request(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        await conn.expect_nothing(0.1)
        async with grpc.aio.insecure_channel(control_plane.target) as channel:
            call = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).StreamClientStatus()
            request = csds_pb2.ClientStatusRequest(exclude_resource_contents=True)
            for _ in range(2):
                await call.write(request)
                response = await call.read()
                (config,) = response.config
                assert config.node.id == local_node().id
                assert all(not g.HasField("xds_config") for g in config.generic_xds_configs)
                assert {g.config_status for g in config.generic_xds_configs} == {csds_pb2.SYNCED}
            await call.done_writing()


async def test_metrics_count_proxies_pushes_nacks_and_convergence(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        status, text = await http_get(control_plane, "/metrics")
        assert status == 200
        assert metric(text, "controlplane_xds_connected_proxies", protocol="delta") == 1
        assert metric(text, "controlplane_xds_pushes_total", type="rds", protocol="delta") == 1
        before_bytes = metric(text, "controlplane_xds_sent_bytes_total", type="eds")

        control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
        await ack(conn, await conn.recv())
        control_plane.apply(canary(50, 50))
        rds = await conn.recv()
        await conn.send(delta_request(ROUTE, nonce=rds.nonce, error="nope"))
        await conn.expect_nothing(0.2)

        _, text = await http_get(control_plane, "/metrics")
        assert metric(text, "controlplane_xds_pushes_total", type="eds", protocol="delta") == 2
        assert metric(text, "controlplane_xds_sent_bytes_total", type="eds") > before_bytes
        assert metric(text, "controlplane_xds_nacks_total", type="rds") == 1
        # The endpoint change was ACKed: one convergence sample for EDS.
        assert metric(text, "controlplane_xds_convergence_seconds_count", type="eds") == 1
        assert (
            metric(text, "controlplane_xds_convergence_seconds_bucket", type="eds", le="+Inf") == 1
        )
        assert metric(text, "controlplane_xds_push_duration_seconds_count") >= 6
        assert metric(text, "controlplane_xds_push_queue_depth") == 0
        assert "# TYPE controlplane_xds_push_duration_seconds histogram" in text
    for _ in range(100):  # the server notices the closed stream shortly
        _, text = await http_get(control_plane, "/metrics")
        if metric(text, "controlplane_xds_connected_proxies", protocol="delta") == 0:
            break
        await asyncio.sleep(0.05)
    assert metric(text, "controlplane_xds_connected_proxies", protocol="delta") == 0


async def test_health_readiness_and_debug_views_answer(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    assert (await http_get(control_plane, "/healthz"))[0] == 200
    assert (await http_get(control_plane, "/ready"))[0] == 200
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        await conn.expect_nothing(0.1)  # the last ACK is processed
        status, body = await http_get(control_plane, "/debug/syncz")
        (proxy,) = json.loads(body)["proxies"]
        assert proxy["node_id"] == local_node().id
        assert proxy["identity"] == "spiffe://cluster.local/ns/default/sa/default"
        assert proxy["types"]["rds"]["status"] == "SYNCED"
        status, body = await http_get(
            control_plane, f"/debug/config_dump?proxy={local_node().id}&type=rds"
        )
        assert status == 200
        routes = json.loads(body)["resources"]["rds"]
        assert [r["name"] for r in routes] == [ROUTE_NAME]
    await control_plane.hub.stop()
    assert (await http_get(control_plane, "/ready"))[0] == 503
