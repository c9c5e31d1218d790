"""Resources from other caches (e.g. SDS secrets from the CA) ride the same streams, per
proxy, without un-sharing the compiler's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane.cache.interface import NOTHING, ResourceMap, Wake
from controlplane.compile import CompiledResource
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, SECRET
from controlplane.testing.ads_client import AdsConnection, delta_request
from tests.xds.conftest import ControlPlane, serving
from tests.xds.mesh import MESH, local_node
from tests.xds.test_delta import ack, names

Provider = Callable[[Proxy], Mapping[str, ResourceMap]]


class ProviderCache:
    """A ConfigCache of resources made per proxy by a function (they never change)."""

    change_seen_at = 0.0

    def __init__(self, provide: Provider) -> None:
        self.provide = provide

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        return self.provide(proxy).get(type_url, NOTHING)

    def watch(self, proxy: Proxy, wake: Wake) -> _ProviderWatch:
        return _ProviderWatch(self, proxy)

    def subscribe(self, listener: Callable[[], None]) -> None:
        pass


class _ProviderWatch:
    def __init__(self, cache: ProviderCache, proxy: Proxy) -> None:
        self.cache, self.proxy = cache, proxy

    def resources(self, type_url: str) -> ResourceMap:
        return self.cache.fetch(self.proxy, type_url)

    def cancel(self) -> None:
        pass


def secrets_for(proxy: Proxy) -> dict[str, dict[str, CompiledResource]]:
    secret = secret_pb2.Secret(name="default")
    secret.generic_secret.secret.inline_string = f"for {proxy.node_id}"
    return {SECRET: {"default": CompiledResource("default", secret)}}


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    async with serving({SECRET: ProviderCache(secrets_for)}) as served:
        yield served


async def test_provider_secrets_reach_each_proxy_and_cluster_maps_stay_shared(
    control_plane: ControlPlane,
) -> None:
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
    hub = control_plane.cache
    a = Proxy(node_id="a", namespace="default", local_outbound_port=15001)
    b = Proxy(node_id="b", namespace="default", local_outbound_port=15001)
    assert hub.resources_for(a).of(CLUSTER) is hub.resources_for(b).of(CLUSTER)
    assert hub.resources_for(a).of(SECRET) is not hub.resources_for(b).of(SECRET)
