"""State-of-the-World ADS, spoken by a Python client to the real grpc.aio server."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import AdsConnection, sotw_request
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
    node,
    ratings_pod,
)


def names_of(response, message_type) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for any_message in response.resources:
        message = message_type()
        any_message.Unpack(message)
        out.append(getattr(message, "cluster_name", "") or message.name)
    return out


async def ack(conn: AdsConnection, response, names=()) -> None:  # type: ignore[no-untyped-def]
    await conn.send(
        sotw_request(response.type_url, names, version=response.version_info, nonce=response.nonce)
    )


async def connect_all(cp: ControlPlane, conn: AdsConnection, name: str = "client") -> dict:  # type: ignore[type-arg]
    """Subscribe like Envoy (CDS, EDS, LDS, RDS), ACK everything; the last response by type."""
    await conn.send(sotw_request(CLUSTER, node_message=local_node(name)))
    cds = await conn.recv()
    assert cds.type_url == CLUSTER
    await ack(conn, cds)
    clusters = names_of(cds, cluster_pb2.Cluster)
    await conn.send(sotw_request(ENDPOINT, clusters))
    eds = await conn.recv()
    assert eds.type_url == ENDPOINT
    await ack(conn, eds, clusters)
    await conn.send(sotw_request(LISTENER))
    lds = await conn.recv()
    assert lds.type_url == LISTENER
    await ack(conn, lds)
    await conn.send(sotw_request(ROUTE, [ROUTE_NAME]))
    rds = await conn.recv()
    assert rds.type_url == ROUTE
    await ack(conn, rds, [ROUTE_NAME])
    return {CLUSTER: cds, ENDPOINT: eds, LISTENER: lds, ROUTE: rds}


async def test_envoy_order_subscription_gets_every_type_and_acks_show_synced(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        got = await connect_all(control_plane, conn)
        assert sorted(names_of(got[CLUSTER], cluster_pb2.Cluster)) == sorted(
            [RATINGS, REVIEWS, REVIEWS_V1, REVIEWS_V2]
        )
        assert sorted(names_of(got[ENDPOINT], endpoint_pb2.ClusterLoadAssignment)) == sorted(
            [RATINGS, REVIEWS, REVIEWS_V1, REVIEWS_V2]
        )
        assert names_of(got[ROUTE], route_pb2.RouteConfiguration) == [ROUTE_NAME]
        await conn.expect_nothing(0.2)
        stream = control_plane.stream_of(local_node().id)
        assert {s.synced for s in stream.states.values()} == {"SYNCED"}
        nonces = {r.nonce for r in got.values()}
        assert len(nonces) == 4


async def test_named_subscription_gets_only_the_named_resources(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(ENDPOINT, [RATINGS], node_message=local_node()))
        eds = await conn.recv()
        assert names_of(eds, endpoint_pb2.ClusterLoadAssignment) == [RATINGS]
        await ack(conn, eds, [RATINGS])
        # Asking for one more name sends it.
        await conn.send(
            sotw_request(ENDPOINT, [RATINGS, REVIEWS_V1], version=eds.version_info, nonce=eds.nonce)
        )
        more = await conn.recv()
        assert REVIEWS_V1 in names_of(more, endpoint_pb2.ClusterLoadAssignment)


async def test_endpoint_change_sends_only_that_clusters_assignment(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await connect_all(control_plane, conn)
        control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
        eds = await conn.recv()
        assert eds.type_url == ENDPOINT
        assert names_of(eds, endpoint_pb2.ClusterLoadAssignment) == [RATINGS]
        cla = endpoint_pb2.ClusterLoadAssignment()
        eds.resources[0].Unpack(cla)
        addresses = sorted(
            e.endpoint.address.socket_address.address
            for group in cla.endpoints
            for e in group.lb_endpoints
        )
        assert addresses == ["127.0.6.3", "127.0.6.4"]
        await ack(conn, eds, [RATINGS, REVIEWS, REVIEWS_V1, REVIEWS_V2])
        await conn.expect_nothing(0.3)  # no CDS, LDS or RDS for an endpoint change


async def test_wildcard_clusters_are_sent_whole_so_a_deleted_service_disappears(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await connect_all(control_plane, conn)
        control_plane.delete(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n"
            "spec: {ports: [{port: 9080}]}\n"
        )
        seen = {}
        for _ in range(2):
            response = await conn.recv()
            seen[response.type_url] = response
            await ack(conn, response, [ROUTE_NAME] if response.type_url == ROUTE else [])
        await conn.expect_nothing(0.2)  # nothing for EDS: removals are not sent in SotW
        cds = seen[CLUSTER]
        assert sorted(names_of(cds, cluster_pb2.Cluster)) == sorted(
            [REVIEWS, REVIEWS_V1, REVIEWS_V2]
        )
        assert ROUTE in seen  # the ratings virtual host left the route configuration


async def test_cluster_change_is_followed_by_its_endpoints(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await connect_all(control_plane, conn)
        control_plane.apply(ROUND_ROBIN_RULE)
        cds = await conn.recv()
        assert cds.type_url == CLUSTER
        eds = await conn.recv()
        assert eds.type_url == ENDPOINT  # right after CDS, before any ACK
        assert sorted(names_of(eds, endpoint_pb2.ClusterLoadAssignment)) == sorted(
            [REVIEWS, REVIEWS_V1, REVIEWS_V2]
        )


async def test_nack_is_recorded_with_resource_names_and_not_resent(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with AdsConnection(control_plane.target) as conn:
        got = await connect_all(control_plane, conn)
        good = got[ROUTE].version_info
        control_plane.apply(canary(50, 50))
        rds = await conn.recv()
        assert rds.type_url == ROUTE
        await conn.send(
            sotw_request(ROUTE, [ROUTE_NAME], version=good, nonce=rds.nonce, error="rejected")
        )
        await conn.expect_nothing(0.5)  # not re-sent
        state = control_plane.stream_of(local_node().id).states[ROUTE]
        assert state.synced == "NACKED"
        assert state.acked_version == good
        assert state.nack is not None and state.nack.message == "rejected"
        assert state.nack.resource_names == (ROUTE_NAME,)
        # The next change is sent.
        control_plane.apply(canary(10, 90))
        fixed = await conn.recv()
        assert fixed.type_url == ROUTE and fixed.version_info != rds.version_info


async def test_reply_to_an_older_nonce_is_ignored(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH + "---\n" + canary(90, 10))
    async with AdsConnection(control_plane.target) as conn:
        got = await connect_all(control_plane, conn)
        control_plane.apply(canary(50, 50))
        newer = await conn.recv()
        # A NACK of the previous response (stale nonce) changes nothing.
        await conn.send(
            sotw_request(ROUTE, [ROUTE_NAME], version="", nonce=got[ROUTE].nonce, error="too late")
        )
        await ack(conn, newer, [ROUTE_NAME])
        await conn.expect_nothing(0.3)
        state = control_plane.stream_of(local_node().id).states[ROUTE]
        assert state.nack is None and state.synced == "SYNCED"


async def test_reconnect_gets_the_full_current_state(control_plane: ControlPlane) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        first = await connect_all(control_plane, conn)
    control_plane.apply(ratings_pod("ratings-v2", "127.0.6.4"))
    async with AdsConnection(control_plane.target) as conn:
        again = await connect_all(control_plane, conn)
    assert len(again[ENDPOINT].resources) == 4
    assert again[ENDPOINT].version_info != first[ENDPOINT].version_info
    assert again[CLUSTER].version_info == first[CLUSTER].version_info


async def test_unknown_type_is_answered_empty_and_the_stream_keeps_working(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request("type.googleapis.com/no.such.Type", node_message=local_node()))
        # An empty answer, as istiod's (issue 11: this was ignored in silence), and no more.
        empty = await conn.recv()
        assert empty.type_url == "type.googleapis.com/no.such.Type" and not empty.resources
        await conn.expect_nothing(0.2)
        await conn.send(sotw_request(LISTENER))
        lds = await conn.recv()
        assert lds.type_url == LISTENER


async def test_the_last_listener_going_is_sent_as_an_empty_wildcard_list(
    control_plane: ControlPlane,
) -> None:
    # A gateway whose only Gateway is deleted must lose its listener: in SotW an empty
    # listener list is the whole new state (an empty RDS or EDS update would say nothing).
    gateway = (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n"
        "metadata: {name: edge, namespace: default}\n"
        "spec: {selector: {istio: ingressgateway}, servers: "
        "[{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]}\n"
    )
    control_plane.apply(MESH + "---\n" + gateway)
    router = node(
        "router~127.0.6.101~ingress-1.istio-system~istio-system.svc.cluster.local",
        {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
    )
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(LISTENER, node_message=router))
        lds = await conn.recv()
        assert names_of(lds, listener_pb2.Listener) == ["0.0.0.0_8080"]
        await ack(conn, lds)
        control_plane.delete(gateway)
        empty = await conn.recv()
        assert empty.type_url == LISTENER and list(empty.resources) == []
        assert empty.version_info != lds.version_info
