"""On-demand delivery on the wire (Delta ADS, a Python client speaking as Envoy does): the
answer that lets a route configuration's listener warm, a Host nothing matches, and a canary
that goes only to the proxies that asked for its host, as one virtual host."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane.compile.resources import CLUSTER, LISTENER, ROUTE, VIRTUAL_HOST
from controlplane.testing.ads_client import AdsConnection, delta_request, sotw_request
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, REVIEWS_V1, ROUTE_NAME, canary, local_node

REVIEWS_ALIAS = f"{ROUTE_NAME}/reviews:9080"


async def ack(conn: AdsConnection, response) -> None:  # type: ignore[no-untyped-def]
    await conn.send(delta_request(response.type_url, nonce=response.nonce))


async def connect(conn: AdsConnection, name: str) -> None:
    """CDS, LDS, RDS as Envoy asks, then VHDS with no names (Envoy's first VHDS request)."""
    me = local_node(name, ON_DEMAND="true")
    await conn.send(delta_request(CLUSTER, node_message=me))
    cds = await conn.recv()
    assert REVIEWS_V1 not in {r.name for r in cds.resources}  # only when named
    await ack(conn, cds)
    await conn.send(delta_request(LISTENER))
    await ack(conn, await conn.recv())
    await conn.send(delta_request(ROUTE, [ROUTE_NAME]))
    rds = await conn.recv()
    config = route_pb2.RouteConfiguration()
    rds.resources[0].resource.Unpack(config)
    assert list(config.virtual_hosts) == [] and config.HasField("vhds")
    await ack(conn, rds)
    await conn.send(delta_request(VIRTUAL_HOST))
    vhds = await conn.recv()
    # One empty resource in the route configuration's namespace: Envoy's VHDS subscription
    # completes its initialization (and the listener warms) only when one arrives.
    assert [(r.name, r.HasField("resource")) for r in vhds.resources] == [(f"{ROUTE_NAME}/", False)]
    await ack(conn, vhds)


async def ask(conn: AdsConnection, alias: str) -> route_components_pb2.VirtualHost | None:
    await conn.send(delta_request(VIRTUAL_HOST, [alias]))
    response = await conn.recv()
    await ack(conn, response)
    assert [r.name for r in response.resources] == [alias]
    if not response.resources[0].HasField("resource"):
        return None
    host = route_components_pb2.VirtualHost()
    response.resources[0].resource.Unpack(host)
    return host


async def test_an_asked_host_is_answered_and_a_host_nothing_matches_is_answered_empty(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect(conn, "productpage")
        host = await ask(conn, REVIEWS_ALIAS)
        assert host is not None and host.name == REVIEWS_ALIAS
        assert list(host.domains) == ["reviews:9080"]
        assert await ask(conn, f"{ROUTE_NAME}/nothing.example") is None
        await conn.send(delta_request(CLUSTER, [REVIEWS_V1]))
        cds = await conn.recv()
        assert [r.name for r in cds.resources] == [REVIEWS_V1]
        await ack(conn, cds)
        await conn.expect_nothing(0.2)


async def test_a_canary_goes_to_the_subscribed_proxy_only_as_one_virtual_host(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with (
        AdsConnection(control_plane.target, delta=True) as caller,
        AdsConnection(control_plane.target, delta=True) as other,
    ):
        await connect(caller, "productpage")
        await connect(other, "details")
        await ask(caller, REVIEWS_ALIAS)
        await ask(other, f"{ROUTE_NAME}/ratings:9080")
        sent_before = control_plane.xds.delivery.metrics.sent_bytes.value("rds")
        control_plane.apply(canary(0, 100))
        response = await caller.recv()
        assert response.type_url == VIRTUAL_HOST
        assert [r.name for r in response.resources] == [REVIEWS_ALIAS]
        assert len(response.SerializeToString()) < 2048
        await ack(caller, response)
        await other.expect_nothing(0.5)
        await caller.expect_nothing(0.2)
        assert control_plane.xds.delivery.metrics.sent_bytes.value("rds") == sent_before


async def test_a_state_of_the_world_proxy_asking_for_on_demand_gets_the_full_table(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=False) as conn:
        await conn.send(
            sotw_request(ROUTE, [ROUTE_NAME], node_message=local_node(ON_DEMAND="true"))
        )
        response = await conn.recv()
        config = route_pb2.RouteConfiguration()
        response.resources[0].Unpack(config)
        assert len(config.virtual_hosts) >= 2 and not config.HasField("vhds")
