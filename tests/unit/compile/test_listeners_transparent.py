"""Transparent-mode outbound listeners, named and shaped as istiod shapes them."""

from __future__ import annotations

from controlplane.compile.proxy import Proxy, proxy_from_node
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.8
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: other}
spec:
  clusterIP: 10.96.0.7
  selector: {app: details}
  ports: [{name: http-web, port: 9080}, {name: http-admin, port: 15000}]
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: default}
spec:
  clusterIP: 10.96.0.9
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}, {name: udp-x, port: 9001, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: headless-db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
"""


def client() -> Proxy:
    return proxy_from_node("sidecar~10.1.0.5~client.default~default.svc.cluster.local", {})


def test_transparent_sidecar_gets_virtual_outbound_per_port_and_vip_listeners() -> None:
    out = compiled(snapshot_of(MESH), client())
    assert set(out["lds"]) == {
        "virtualOutbound",
        "virtualInbound",
        "0.0.0.0_9080",
        "10.96.0.9_9000",
    }
    assert set(out["rds"]) == {"9080"}


def test_virtual_outbound_hands_off_by_original_destination_and_passes_the_rest_through() -> None:
    listener = compiled(snapshot_of(MESH), client())["lds"]["virtualOutbound"]
    assert listener["address"]["socketAddress"] == {"address": "0.0.0.0", "portValue": 15001}
    assert listener["useOriginalDst"] is True
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.original_dst"
    ]
    assert listener["trafficDirection"] == "OUTBOUND"
    blackhole, catch_all = listener["filterChains"]
    assert blackhole["name"] == "virtualOutbound-blackhole"
    assert blackhole["filterChainMatch"] == {"destinationPort": 15001}
    assert blackhole["filters"][0]["typedConfig"]["cluster"] == "BlackHoleCluster"
    assert catch_all["name"] == "virtualOutbound-catchall-tcp"
    assert "filterChainMatch" not in catch_all
    assert catch_all["filters"][0]["typedConfig"]["cluster"] == "PassthroughCluster"


def test_http_port_listener_is_not_bound_and_routes_by_rds_named_after_the_port() -> None:
    listener = compiled(snapshot_of(MESH), client())["lds"]["0.0.0.0_9080"]
    assert listener["address"]["socketAddress"] == {"address": "0.0.0.0", "portValue": 9080}
    assert listener["bindToPort"] is False
    [chain] = listener["filterChains"]
    hcm = chain["filters"][0]["typedConfig"]
    assert hcm["rds"]["routeConfigName"] == "9080"
    assert hcm["statPrefix"] == "outbound_0.0.0.0_9080"


def test_tcp_port_listener_sits_at_the_vip_and_proxies_to_the_service_cluster() -> None:
    listener = compiled(snapshot_of(MESH), client())["lds"]["10.96.0.9_9000"]
    assert listener["address"]["socketAddress"] == {"address": "10.96.0.9", "portValue": 9000}
    assert listener["bindToPort"] is False
    [chain] = listener["filterChains"]
    proxy = chain["filters"][0]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert proxy["typedConfig"]["cluster"] == "outbound|9000||tcp-echo.default.svc.cluster.local"


def test_sidecar_ports_and_udp_and_headless_tcp_get_no_outbound_listener() -> None:
    names = set(compiled(snapshot_of(MESH), client())["lds"])
    assert "0.0.0.0_15000" not in names  # the sidecar's own admin port
    assert not [n for n in names if n.endswith("_9001") or n.endswith("_5432")]


def test_transparent_sidecar_has_istios_fixed_clusters() -> None:
    out = compiled(snapshot_of(MESH), client())
    assert out["cds"]["PassthroughCluster"]["type"] == "ORIGINAL_DST"
    assert out["cds"]["PassthroughCluster"]["lbPolicy"] == "CLUSTER_PROVIDED"
    assert out["cds"]["BlackHoleCluster"]["type"] == "STATIC"
    assert out["cds"]["InboundPassthroughCluster"]["type"] == "ORIGINAL_DST"


def test_local_mode_keeps_its_single_outbound_listener() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
        {"LOCAL_OUTBOUND_PORT": "15001"},
    )
    out = compiled(snapshot_of(MESH), proxy)
    assert set(out["lds"]) == {"127.0.0.1_15001"}
    assert "PassthroughCluster" not in out["cds"]


def test_local_tcp_ports_become_loopback_listeners_for_the_named_service_port() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
        {"LOCAL_OUTBOUND_PORT": "15001", "LOCAL_TCP_PORTS": "tcp-echo:9000=20100,nope:1=20101"},
    )
    out = compiled(snapshot_of(MESH), proxy)
    listener = out["lds"]["127.0.0.1_20100"]
    assert listener["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": 20100}
    cluster = listener["filterChains"][0]["filters"][0]["typedConfig"]["cluster"]
    assert cluster == "outbound|9000||tcp-echo.default.svc.cluster.local"
    assert "127.0.0.1_20101" not in out["lds"]  # no such service: nothing to listen for


def test_only_local_tcp_ports_still_means_local_mode() -> None:
    proxy = proxy_from_node(
        "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
        {"LOCAL_TCP_PORTS": "tcp-echo:9000=20100"},
    )
    assert proxy.mode == "local"


SNIFFED = meshes.join(
    meshes.resource(
        "Service",
        "cache",
        """
  clusterIP: 10.96.0.30
  ports: [{port: 6379}]
""",
    ),
    meshes.resource(
        "Service",
        "cache-b",
        """
  clusterIP: 10.96.0.31
  ports: [{name: redis-port, port: 6379}]
""",
    ),
)


def test_an_undeclared_port_is_sniffed_http_by_rds_other_bytes_by_vip() -> None:
    out = compiled(snapshot_of(MESH, SNIFFED), client())["lds"]
    listener = out["0.0.0.0_6379"]
    vip_http, vip_tcp, http, passthrough = listener["filterChains"]
    vip = [{"addressPrefix": "10.96.0.30", "prefixLen": 32}]
    # Envoy matches the IP before the application protocol: the VIP has its own HTTP chain.
    assert vip_http["filterChainMatch"] == {
        "prefixRanges": vip,
        "applicationProtocols": ["http/1.1", "h2c"],
    }
    assert vip_http["filters"][0]["typedConfig"]["rds"]["routeConfigName"] == "6379"
    assert vip_tcp["filterChainMatch"] == {"prefixRanges": vip}
    assert vip_tcp["filters"][0]["typedConfig"]["cluster"] == (
        "outbound|6379||cache.default.svc.cluster.local"
    )
    assert http["filterChainMatch"] == {"applicationProtocols": ["http/1.1", "h2c"]}
    assert passthrough["name"] == "PassthroughFilterChain"
    assert passthrough["filters"][0]["typedConfig"]["cluster"] == "PassthroughCluster"
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.http_inspector"
    ]
    # redis-port declares TCP (the "redis" prefix): its own VIP listener, no sniffing.
    assert "10.96.0.31_6379" in out


def test_a_declared_http_port_is_not_sniffed() -> None:
    listener = compiled(snapshot_of(MESH), client())["lds"]["0.0.0.0_9080"]
    assert "listenerFilters" not in listener
    assert len(listener["filterChains"]) == 1
