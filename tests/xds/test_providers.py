"""Resources from providers (e.g. SDS secrets from the CA) ride the same streams, per proxy,
without un-sharing the compiler's resources."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane.compile import CompiledResource
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, SECRET
from controlplane.testing.ads_client import AdsConnection, delta_request
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import MESH, local_node
from tests.xds.test_delta import ack, names


def secrets_for(proxy: Proxy) -> dict[str, dict[str, CompiledResource]]:
    secret = secret_pb2.Secret(name="default")
    secret.generic_secret.secret.inline_string = f"for {proxy.node_id}"
    return {SECRET: {"default": CompiledResource("default", secret)}}


async def test_provider_secrets_reach_each_proxy_and_cluster_maps_stay_shared(
    control_plane: ControlPlane,
) -> None:
    control_plane.hub.providers.append(secrets_for)
    control_plane.apply(MESH)
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await conn.send(delta_request(SECRET, ["default"], node_message=local_node("a")))
        sds = await conn.recv()
        assert sds.type_url == SECRET and names(sds) == ["default"]
        secret = secret_pb2.Secret()
        sds.resources[0].resource.Unpack(secret)
        assert secret.generic_secret.secret.inline_string == f"for {local_node('a').id}"
        await ack(conn, sds)
        await conn.expect_nothing(0.2)
    hub = control_plane.hub
    a = Proxy(node_id="a", namespace="default", local_outbound_port=15001)
    b = Proxy(node_id="b", namespace="default", local_outbound_port=15001)
    assert hub.resources_for(a).of(CLUSTER) is hub.resources_for(b).of(CLUSTER)
    assert hub.resources_for(a).of(SECRET) is not hub.resources_for(b).of(SECRET)
