"""Delta (incremental) ADS, spoken by a Python client to the real grpc.aio server."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import AdsConnection, delta_request
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import (
    MESH,
    RATINGS,
    REVIEWS,
    REVIEWS_V1,
    REVIEWS_V2,
    ROUND_ROBIN_RULE,
    ROUTE_NAME,
    canary,
    local_node,
    ratings_pod,
)

ALL_CLUSTERS = sorted([RATINGS, REVIEWS, REVIEWS_V1, REVIEWS_V2])
RATINGS_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {ports: [{port: 9080}]}
"""


async def ack(conn: AdsConnection, response) -> None:  # type: ignore[no-untyped-def]
    await conn.send(delta_request(response.type_url, nonce=response.nonce))


def names(response) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.name for r in response.resources)


async def connect_all(conn: AdsConnection, name: str = "client", initial=None) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Envoy's order: wildcard CDS, named EDS, wildcard LDS, named RDS; ACK everything."""
    initial = initial or {}
    got = {}
    await conn.send(
        delta_request(CLUSTER, node_message=local_node(name), initial=initial.get(CLUSTER))
    )
    got[CLUSTER] = await conn.recv()
    await ack(conn, got[CLUSTER])
    await conn.send(delta_request(ENDPOINT, ALL_CLUSTERS, initial=initial.get(ENDPOINT)))
    got[ENDPOINT] = await conn.recv()
    await ack(conn, got[ENDPOINT])
    await conn.send(delta_request(LISTENER, initial=initial.get(LISTENER)))
    got[LISTENER] = await conn.recv()
    await ack(conn, got[LISTENER])
    await conn.send(delta_request(ROUTE, [ROUTE_NAME], initial=initial.get(ROUTE)))
    got[ROUTE] = await conn.recv()
    await ack(conn, got[ROUTE])
    return got


async def test_wildcard_and_named_subscriptions_get_their_resources_with_versions(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        got = await connect_all(conn)
        assert names(got[CLUSTER]) == ALL_CLUSTERS
        assert names(got[ENDPOINT]) == ALL_CLUSTERS
        assert names(got[ROUTE]) == [ROUTE_NAME]
        assert all(r.version for r in got[CLUSTER].resources)
        assert len({r.nonce for r in got.values()}) == 4
        await conn.expect_nothing(0.2)
        stream = control_plane.stream_of(local_node().id)
        assert stream.protocol == "delta"
        assert {s.synced for s in stream.states.values()} == {"SYNCED"}


async def test_named_subscription_only_gets_what_it_names(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await conn.send(delta_request(ENDPOINT, [RATINGS], node_message=local_node()))
        eds = await conn.recv()
        assert names(eds) == [RATINGS]
        await ack(conn, eds)
        await conn.send(delta_request(ENDPOINT, [REVIEWS_V1]))
        more = await conn.recv()
        assert names(more) == [REVIEWS_V1]  # only the new name, not the one it has


async def test_endpoint_change_sends_one_assignment_and_nothing_else(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
        eds = await conn.recv()
        assert eds.type_url == ENDPOINT and names(eds) == [RATINGS]
        cla = endpoint_pb2.ClusterLoadAssignment()
        eds.resources[0].resource.Unpack(cla)
        assert len(cla.endpoints[0].lb_endpoints) == 2
        await ack(conn, eds)
        await conn.expect_nothing(0.3)


async def test_deleted_service_is_named_in_removed_resources(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        control_plane.delete(RATINGS_SERVICE)
        seen = {}
        for _ in range(3):
            response = await conn.recv()
            seen[response.type_url] = response
            await ack(conn, response)
        assert list(seen) == [CLUSTER, ENDPOINT, ROUTE]  # Envoy's order
        assert list(seen[CLUSTER].removed_resources) == [RATINGS]
        assert not seen[CLUSTER].resources
        assert list(seen[ENDPOINT].removed_resources) == [RATINGS]
        assert names(seen[ROUTE]) == [ROUTE_NAME]


async def test_unsubscribed_resource_is_no_longer_updated(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        await conn.send(delta_request(ENDPOINT, unsubscribe=[RATINGS]))
        await conn.expect_nothing(0.2)  # no removal for what the proxy dropped itself
        control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
        await conn.expect_nothing(0.3)
        await conn.send(delta_request(ENDPOINT, [RATINGS]))
        again = await conn.recv()
        assert names(again) == [RATINGS]


async def test_reconnect_with_initial_versions_gets_only_what_changed(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        first = await connect_all(conn)
    have = {t: {r.name: r.version for r in response.resources} for t, response in first.items()}
    # While it was away: one endpoint changed, one service went.
    control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
    control_plane.delete(
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: default}
        spec: {host: reviews}
        """
    )
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await conn.send(delta_request(CLUSTER, node_message=local_node(), initial=have[CLUSTER]))
        cds = await conn.recv()
        assert names(cds) == []
        assert sorted(cds.removed_resources) == [REVIEWS_V1, REVIEWS_V2]
        await ack(conn, cds)
        await conn.send(delta_request(ENDPOINT, [RATINGS, REVIEWS], initial=have[ENDPOINT]))
        eds = await conn.recv()
        assert names(eds) == [RATINGS]  # the reviews assignment did not change
        await ack(conn, eds)
        # The listener and routes are what the proxy has: each first request gets an empty
        # answer (so a starting proxy's initial fetch completes), nothing more.
        for type_url, subscribe in ((LISTENER, []), (ROUTE, [ROUTE_NAME])):
            await conn.send(delta_request(type_url, subscribe, initial=have[type_url]))
            response = await conn.recv()
            assert response.type_url == type_url
            assert not response.resources and not response.removed_resources
            await ack(conn, response)
        await conn.expect_nothing(0.3)
        stream = control_plane.stream_of(local_node().id)
        assert stream.states[LISTENER].synced == "SYNCED"
        assert stream.states[ROUTE].client_version(ROUTE_NAME) == have[ROUTE][ROUTE_NAME]


async def test_nack_records_the_resources_and_the_rejected_version_is_not_resent(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with AdsConnection(control_plane.target, delta=True) as conn:
        got = await connect_all(conn)
        good = got[ROUTE].resources[0].version
        control_plane.apply(canary(50, 50))
        rds = await conn.recv()
        assert rds.type_url == ROUTE
        await conn.send(delta_request(ROUTE, nonce=rds.nonce, error="route rejected"))
        await conn.expect_nothing(0.4)
        # Another, unrelated change: the rejected route is still not offered again.
        control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
        eds = await conn.recv()
        assert eds.type_url == ENDPOINT
        await ack(conn, eds)
        await conn.expect_nothing(0.3)
        state = control_plane.stream_of(local_node().id).states[ROUTE]
        assert state.synced == "NACKED"
        assert state.nack is not None and state.nack.resource_names == (ROUTE_NAME,)
        assert state.nack.message == "route rejected"
        assert state.client_version(ROUTE_NAME) == good
        # A new version of the route is sent.
        control_plane.apply(canary(10, 90))
        fixed = await conn.recv()
        assert fixed.type_url == ROUTE and fixed.resources[0].version != rds.resources[0].version
        await ack(conn, fixed)
        await conn.expect_nothing(0.2)
        assert state.synced == "SYNCED"


async def test_changed_cluster_is_followed_by_its_endpoints_again(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await connect_all(conn)
        control_plane.apply(ROUND_ROBIN_RULE)
        cds = await conn.recv()
        changed = sorted([REVIEWS, REVIEWS_V1, REVIEWS_V2])
        assert cds.type_url == CLUSTER and names(cds) == changed
        eds = await conn.recv()
        # Unchanged assignments, re-sent because Envoy re-warms the changed clusters.
        assert eds.type_url == ENDPOINT and names(eds) == changed


async def test_garbage_type_urls_and_unknown_names_get_an_empty_answer_and_no_harm(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await conn.send(delta_request("garbage", ["x"], node_message=local_node()))
        # Answered with nothing, as istiod answers a type it has no resources of (issue 11:
        # this was ignored in silence).
        garbage = await conn.recv()
        assert garbage.type_url == "garbage" and not garbage.resources
        await conn.send(delta_request(ENDPOINT, ["outbound|1||no-such.example"]))
        empty = await conn.recv()
        assert empty.type_url == ENDPOINT and not empty.resources
        await ack(conn, empty)
        await conn.expect_nothing(0.3)  # no loop on a name that does not exist
        await conn.send(delta_request(CLUSTER))
        cds = await conn.recv()
        assert names(cds) == ALL_CLUSTERS


async def test_proxies_sent_the_same_route_table_share_one_response_and_ack_on_their_own(
    control_plane: ControlPlane,
) -> None:
    """One encoded response serves every proxy sent the same resources (one nonce for all);
    what each proxy answers to it is still its own: a NACK from one leaves the other synced,
    and the one that NACKed gets the next version like everyone else."""
    control_plane.apply(MESH)
    async with (
        AdsConnection(control_plane.target, delta=True) as a,
        AdsConnection(control_plane.target, delta=True) as b,
    ):
        await connect_all(a, "client-a")
        await connect_all(b, "client-b")
        control_plane.apply(canary(60, 40))
        route_a, route_b = await a.recv(), await b.recv()
        assert route_a.type_url == route_b.type_url == ROUTE
        assert route_a.nonce == route_b.nonce
        assert a.last_size == b.last_size
        await a.send(delta_request(ROUTE, nonce=route_a.nonce, error="bench: rejected"))
        await ack(b, route_b)
        await a.expect_nothing(0.3)  # a rejected version is not offered again
        routes_a = control_plane.stream_of(local_node("client-a").id).states[ROUTE]
        routes_b = control_plane.stream_of(local_node("client-b").id).states[ROUTE]
        assert routes_a.nack is not None and routes_a.synced != "SYNCED"
        assert routes_b.nack is None and routes_b.synced == "SYNCED"
        control_plane.apply(canary(20, 80))
        next_a, next_b = await a.recv(), await b.recv()
        assert next_a.nonce == next_b.nonce != route_a.nonce
        await ack(a, next_a)
        await ack(b, next_b)
        await a.expect_nothing(0.2)
        assert routes_a.synced == routes_b.synced == "SYNCED"
