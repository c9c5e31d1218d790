"""Inbound listeners and clusters in both modes: which ports, which names, where they forward."""

from __future__ import annotations

from controlplane.compile.proxy import TRANSPARENT, Proxy, proxy_from_node
from tests.unit.compile.helpers import compiled, snapshot_of

RATINGS = """
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: tcp-db, port: 3306, targetPort: db}
  - {name: grpc-api, port: 7070}
---
apiVersion: v1
kind: Service
metadata: {name: ratings-alias, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: tcp-other, port: 9081, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: default, labels: {app: ratings, version: v1}}
spec:
  containers: [{name: app, ports: [{name: db, containerPort: 3307}]}]
status: {podIP: 127.0.5.20}
"""


def ratings_proxy(mode: str = "local", app: str = "127.0.5.120") -> Proxy:
    metadata = {"NAMESPACE": "default", "LABELS": {"app": "ratings", "version": "v1"}}
    if mode == "local":
        metadata |= {"LOCAL_OUTBOUND_PORT": "15001", "LOCAL_APP_ADDRESS": app}
    return proxy_from_node(
        "sidecar~127.0.5.20~ratings-v1.default~default.svc.cluster.local", metadata
    )


def test_local_sidecar_gets_one_inbound_listener_per_target_port_on_its_pod_address() -> None:
    out = compiled(snapshot_of(RATINGS), ratings_proxy())
    inbound = {n: x for n, x in out["lds"].items() if x.get("trafficDirection") == "INBOUND"}
    assert set(inbound) == {"127.0.5.20_8080", "127.0.5.20_3307", "127.0.5.20_7070"}
    listener = inbound["127.0.5.20_8080"]
    assert listener["address"]["socketAddress"] == {"address": "127.0.5.20", "portValue": 8080}
    assert "listenerFilters" not in listener  # bound to its port: nothing to inspect


def test_oldest_service_decides_the_protocol_of_a_shared_target_port() -> None:
    # ratings (http) and ratings-alias (tcp) both select port 8080; without timestamps the
    # tie breaks by name: ratings wins, so HTTP.
    out = compiled(snapshot_of(RATINGS), ratings_proxy())
    [chain] = out["lds"]["127.0.5.20_8080"]["filterChains"]
    [hcm] = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    config = hcm["typedConfig"]
    assert config["routeConfig"]["name"] == "inbound|8080||"
    [vhost] = config["routeConfig"]["virtualHosts"]
    assert vhost["name"] == "inbound|http|8080" and vhost["domains"] == ["*"]
    assert vhost["routes"][0]["route"]["cluster"] == "inbound|8080||"
    assert [f["name"] for f in config["httpFilters"]] == ["envoy.filters.http.router"]


def test_tcp_target_port_resolved_from_the_container_port_name_gets_a_tcp_proxy() -> None:
    out = compiled(snapshot_of(RATINGS), ratings_proxy())
    [chain] = out["lds"]["127.0.5.20_3307"]["filterChains"]
    assert chain["filterChainMatch"] == {"destinationPort": 3307}
    [tcp] = chain["filters"]
    assert tcp["name"] == "envoy.filters.network.tcp_proxy"
    assert tcp["typedConfig"]["cluster"] == "inbound|3307||"


def test_inbound_clusters_reach_the_app_address_at_the_target_port() -> None:
    out = compiled(snapshot_of(RATINGS), ratings_proxy(app="127.0.5.120"))
    cluster = out["cds"]["inbound|8080||"]
    assert cluster["type"] == "STATIC"
    [endpoint] = cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"]
    assert endpoint["endpoint"]["address"]["socketAddress"] == {
        "address": "127.0.5.120",
        "portValue": 8080,
    }
    assert "upstreamBindConfig" not in cluster
    grpc = out["cds"]["inbound|7070||"]
    assert (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        in grpc["typedExtensionProtocolOptions"]
    )


def test_app_address_defaults_to_loopback() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.5.20~ratings-v1.default~default.svc.cluster.local",
        {"LOCAL_OUTBOUND_PORT": "15001"},
    )
    assert proxy.app_address == "127.0.0.1"
    out = compiled(snapshot_of(RATINGS), proxy)
    address = out["cds"]["inbound|8080||"]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
    assert address["endpoint"]["address"]["socketAddress"]["address"] == "127.0.0.1"


def test_a_sidecar_no_service_selects_gets_no_inbound_side() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.5.99~client.default~default.svc.cluster.local",
        {"LOCAL_OUTBOUND_PORT": "15001"},
    )
    out = compiled(snapshot_of(RATINGS), proxy)
    assert [n for n in out["lds"] if n != "127.0.0.1_15001"] == []
    assert not [n for n in out["cds"] if n.startswith("inbound|")]


def test_pod_in_another_namespace_with_the_same_ip_is_not_this_workload() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.5.20~ratings-v1.other~other.svc.cluster.local",
        {"LOCAL_OUTBOUND_PORT": "15001", "NAMESPACE": "other"},
    )
    out = compiled(snapshot_of(RATINGS), proxy)
    assert not [n for n in out["cds"] if n.startswith("inbound|")]


def test_transparent_sidecar_puts_every_inbound_port_on_virtual_inbound() -> None:
    out = compiled(snapshot_of(RATINGS), ratings_proxy(mode=TRANSPARENT))
    listener = out["lds"]["virtualInbound"]
    assert listener["address"]["socketAddress"] == {"address": "0.0.0.0", "portValue": 15006}
    assert listener["trafficDirection"] == "INBOUND"
    names = [c["name"] for c in listener["filterChains"]]
    assert names == [
        "virtualInbound-blackhole",
        "0.0.0.0_3307",
        "0.0.0.0_7070",
        "0.0.0.0_8080",
        "virtualInbound-catchall-http",
        "virtualInbound",
    ]
    chains = {c["name"]: c for c in listener["filterChains"]}
    assert chains["virtualInbound-blackhole"]["filterChainMatch"] == {"destinationPort": 15006}
    blackhole = chains["virtualInbound-blackhole"]["filters"][0]["typedConfig"]
    assert blackhole["cluster"] == "BlackHoleCluster"
    assert chains["virtualInbound"]["filters"][0]["typedConfig"]["cluster"] == (
        "InboundPassthroughCluster"
    )
    assert chains["virtualInbound-catchall-http"]["filterChainMatch"] == {
        "applicationProtocols": ["http/1.1", "h2c"]
    }
    filters = [f["name"] for f in listener["listenerFilters"]]
    assert filters == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.http_inspector",
    ]
    # Declared ports are not held back for HTTP detection.
    http_inspector = listener["listenerFilters"][1]
    ranges = http_inspector["filterDisabled"]["orMatch"]["rules"]
    assert [r["destinationPortRange"]["start"] for r in ranges] == [3307, 7070, 8080, 15006]


def test_transparent_inbound_clusters_leave_from_the_passthrough_address() -> None:
    out = compiled(snapshot_of(RATINGS), ratings_proxy(mode=TRANSPARENT))
    cluster = out["cds"]["inbound|8080||"]
    assert cluster["upstreamBindConfig"]["sourceAddress"]["address"] == "127.0.0.6"
    address = cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]
    assert address["socketAddress"] == {"address": "127.0.0.1", "portValue": 8080}
    passthrough = out["cds"]["InboundPassthroughCluster"]
    assert passthrough["type"] == "ORIGINAL_DST"
    assert passthrough["upstreamBindConfig"]["sourceAddress"]["address"] == "127.0.0.6"


def test_transparent_sidecar_with_no_service_still_gets_virtual_inbound_passthrough() -> None:
    proxy = proxy_from_node("sidecar~10.1.0.9~client.default~default.svc.cluster.local", {})
    assert proxy.mode == TRANSPARENT
    out = compiled(snapshot_of(RATINGS), proxy)
    names = [c["name"] for c in out["lds"]["virtualInbound"]["filterChains"]]
    assert names == ["virtualInbound-blackhole", "virtualInbound-catchall-http", "virtualInbound"]


def test_replicas_of_one_workload_share_one_compiled_inbound_listener_and_clusters() -> None:
    from controlplane.compile import SnapshotCompiler
    from controlplane.compile.resources import CLUSTER, LISTENER

    second = RATINGS.replace("name: ratings-v1,", "name: ratings-v1b,").replace(
        "podIP: 127.0.5.20", "podIP: 127.0.5.21"
    )
    snapshot = snapshot_of(RATINGS, "---\n" + second.split("---")[-1])
    compiler = SnapshotCompiler(snapshot)
    replica = proxy_from_node(
        "sidecar~127.0.5.21~ratings-v1b.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "ratings", "version": "v1"}},
    )
    a = compiler.compile(ratings_proxy(mode=TRANSPARENT))
    b = compiler.compile(replica)
    assert a.of(LISTENER)["virtualInbound"] is b.of(LISTENER)["virtualInbound"]
    assert a.of(CLUSTER)["inbound|8080||"] is b.of(CLUSTER)["inbound|8080||"]


def test_local_sidecar_sharing_its_address_with_its_app_gets_no_inbound_listener() -> None:
    # The app owns 127.0.5.20's ports; an inbound listener there could only collide with it.
    out = compiled(snapshot_of(RATINGS), ratings_proxy(app="127.0.5.20"))
    assert not [n for n in out["lds"] if n.startswith("127.0.5.20_")]
    assert not [n for n in out["cds"] if n.startswith("inbound|")]


def test_older_service_decides_a_shared_port_by_creation_time() -> None:
    stamped = RATINGS.replace(
        "metadata: {name: ratings-alias, namespace: default}",
        'metadata: {name: ratings-alias, namespace: default, creationTimestamp: "2020-01-01T00:00:00Z"}',
    ).replace(
        "metadata: {name: ratings, namespace: default}",
        'metadata: {name: ratings, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}',
    )
    out = compiled(snapshot_of(stamped), ratings_proxy())
    [chain] = out["lds"]["127.0.5.20_8080"]["filterChains"]
    assert chain["filters"][0]["name"] == "envoy.filters.network.tcp_proxy"  # ratings-alias: TCP
