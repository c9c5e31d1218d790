"""What the compiler gives a sidecar in on-demand mode (``compile/vhds.py``): route
configurations without virtual hosts, the virtual host of a Host it asks for, and its
outbound HTTP clusters only when named."""

from __future__ import annotations

from dataclasses import replace

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from controlplane.cache.shapes import ViewCache
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.resources import (
    CLUSTER,
    LISTENER,
    ROUTE,
    VIRTUAL_HOST,
    OnDemandMap,
)
from controlplane.compile.vhds import VirtualHostMap
from controlplane.store import Store
from tests.documents import submissions
from tests.unit.compile.helpers import local_proxy
from tests.xds.mesh import MESH, canary

REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
ROUTES = "local_15001"


def compiler_of(text: str) -> SnapshotCompiler:
    store = Store()
    store.apply(upserts=submissions(text))
    return SnapshotCompiler(store.snapshot)


def transparent(on_demand: bool) -> Proxy:
    return proxy_from_node(
        "sidecar~127.0.6.9~client-1.default~default.svc.cluster.local",
        {"ON_DEMAND": "true"} if on_demand else {},
    )


def test_node_metadata_selects_on_demand_mode_and_full_table_stays_the_default() -> None:
    assert (
        proxy_from_node("sidecar~1.2.3.4~a.default~default.svc.cluster.local", {}).on_demand
        is False
    )
    for value in ("true", "True", "1"):
        node = proxy_from_node(
            "sidecar~1.2.3.4~a.default~default.svc.cluster.local", {"ON_DEMAND": value}
        )
        assert node.on_demand is True


def test_route_configuration_carries_no_virtual_host_but_vhds() -> None:
    compiler = compiler_of(MESH + "---\n" + canary(90, 10))
    full = compiler.compile(local_proxy()).of(ROUTE)[ROUTES].message
    assert len(full.virtual_hosts) >= 2
    on_demand = compiler.compile(replace(local_proxy(), on_demand=True))
    config = on_demand.of(ROUTE)[ROUTES].message
    assert list(config.virtual_hosts) == []
    assert config.vhds.config_source.HasField("ads")


def test_an_alias_gets_the_virtual_host_the_full_table_matches_renamed_to_it() -> None:
    compiler = compiler_of(MESH + "---\n" + canary(90, 10))
    full = compiler.compile(local_proxy()).of(ROUTE)[ROUTES].message
    expected = next(h for h in full.virtual_hosts if "reviews:9080" in h.domains)
    hosts = compiler.compile(replace(local_proxy(), on_demand=True)).of(VIRTUAL_HOST)
    found = hosts[f"{ROUTES}/Reviews:9080"]
    assert found.name == f"{ROUTES}/Reviews:9080"
    assert found.message.name == found.name
    assert list(found.message.domains) == ["reviews:9080"]
    assert list(found.message.routes) == list(expected.routes)
    assert f"{ROUTES}/nothing.example:80" not in hosts  # local mode has no fallback host
    assert f"{ROUTES}/" not in hosts and "other_routes/reviews:9080" not in hosts


def test_transparent_mode_matches_without_the_port_and_falls_back_to_passthrough() -> None:
    compiler = compiler_of(MESH)
    hosts = compiler.compile(transparent(True)).of(VIRTUAL_HOST)
    with_port = hosts["9080/reviews:9080"].message
    assert list(with_port.domains) == ["reviews:9080"]
    assert with_port.routes[0].route.weighted_clusters or with_port.routes[0].route.cluster
    elsewhere = hosts["9080/example.com:9080"].message
    assert elsewhere.routes[0].route.cluster == "PassthroughCluster"
    config = compiler.compile(transparent(True)).of(ROUTE)["9080"].message
    # Each alias carries its Host as sent: matching must see the port.
    assert not config.ignore_port_in_host_matching


def test_outbound_http_clusters_are_sent_only_when_named() -> None:
    compiler = compiler_of(MESH + "---\n" + canary(90, 10))
    clusters = compiler.compile(transparent(True)).of(CLUSTER)
    assert isinstance(clusters, OnDemandMap)
    views = ViewCache()
    wildcard = views.view(clusters, True, frozenset())
    assert REVIEWS_V1 not in wildcard and "PassthroughCluster" in wildcard
    named = views.view(clusters, True, frozenset({REVIEWS_V1}))
    assert REVIEWS_V1 in named and "PassthroughCluster" in named
    full = compiler.compile(transparent(False)).of(CLUSTER)
    assert set(full) == set(clusters)


def test_outbound_http_filters_start_with_the_on_demand_filter() -> None:
    compiler = compiler_of(MESH)
    for on_demand, first in ((True, "envoy.filters.http.on_demand"), (False, None)):
        listeners = compiler.compile(replace(local_proxy(), on_demand=on_demand)).of(LISTENER)
        chain = listeners["127.0.0.1_15001"].message.filter_chains[0]
        hcm = hcm_pb2.HttpConnectionManager()
        chain.filters[0].typed_config.Unpack(hcm)
        names = [f.name for f in hcm.http_filters]
        assert (names[0] == first) if first else "envoy.filters.http.on_demand" not in names
        assert names[-1] == "envoy.filters.http.router"


def test_after_a_canary_only_the_changed_hosts_aliases_are_rebuilt() -> None:
    store = Store()
    store.apply(upserts=submissions(MESH + "---\n" + canary(90, 10)))
    compiler = SnapshotCompiler(store.snapshot)
    proxy = replace(local_proxy(), on_demand=True)
    before = compiler.compile(proxy).of(VIRTUAL_HOST)
    reviews, ratings = f"{ROUTES}/reviews:9080", f"{ROUTES}/ratings:9080"
    old_reviews, old_ratings = before[reviews], before[ratings]
    change = store.apply(upserts=submissions(canary(0, 100)))
    compiler, _ = SnapshotCompiler.following(compiler, store.snapshot, change.changed)
    after = compiler.compile(proxy).of(VIRTUAL_HOST)
    assert isinstance(after, VirtualHostMap) and isinstance(before, VirtualHostMap)
    after.inherit(before)
    assert after[ratings] is old_ratings  # untouched: the very same resource, nothing to send
    assert after[reviews] is not old_reviews
    assert after[reviews].version != old_reviews.version
