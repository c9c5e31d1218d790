"""Gateway proxies (router mode): Gateways merged into listeners and routes as istiod does."""

from __future__ import annotations

from typing import Any

from controlplane.compile.gateway import merge_gateways
from controlplane.compile.proxy import ROUTER, SIDECAR, Proxy, proxy_from_node
from tests.documents import submissions
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of

INGRESS = {"istio": "ingressgateway"}


def gateway(
    name: str = "bookinfo-gateway",
    hosts: str = '["*"]',
    *,
    port: int = 80,
    protocol: str = "HTTP",
    port_name: str = "http",
    selector: str = "{istio: ingressgateway}",
    namespace: str = "default",
    extra: str = "",
) -> str:
    return meshes.resource(
        "Gateway",
        name,
        f"""
        selector: {selector}
        servers:
        - port: {{number: {port}, name: {port_name}, protocol: {protocol}}}
          hosts: {hosts}
        {extra}
        """,
        namespace=namespace,
    )


def bound(
    name: str,
    hosts: str,
    gateways: str,
    *,
    namespace: str = "default",
    destination: str = "reviews.default.svc.cluster.local",
) -> str:
    return meshes.resource(
        "VirtualService",
        name,
        f"""
        hosts: {hosts}
        gateways: {gateways}
        http:
        - route: [{{destination: {{host: {destination}}}}}]
        """,
        namespace=namespace,
    )


def router(
    labels: dict[str, str] | None = None, namespace: str = "istio-system", ip: str = "10.9.0.1"
) -> Proxy:
    return proxy_from_node(
        f"router~{ip}~ingress-1.{namespace}~{namespace}.svc.cluster.local",
        {"LABELS": INGRESS if labels is None else labels, "NAMESPACE": namespace},
    )


def sidecar(namespace: str = "default") -> Proxy:
    return proxy_from_node(
        f"sidecar~10.1.0.5~client.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace},
    )


MESH = meshes.reviews("10.1.0.1", "10.1.0.2")


def gateway_config(*docs: str, proxy: Proxy | None = None) -> dict[str, dict[str, Any]]:
    return compiled(snapshot_of(MESH, *docs), proxy or router())


def vhosts(config: dict[str, dict[str, Any]], route: str = "http.80") -> dict[str, Any]:
    return {v["name"]: v for v in config["rds"][route]["virtualHosts"]}


def test_the_node_id_says_router_or_sidecar() -> None:
    assert router().proxy_type == ROUTER
    assert sidecar().proxy_type == SIDECAR


def test_a_selected_gateway_proxy_gets_a_listener_per_server_port_and_rds_http_port() -> None:
    config = gateway_config(gateway(), bound("bookinfo", '["*"]', "[bookinfo-gateway]"))
    assert list(config["lds"]) == ["0.0.0.0_80"]
    listener = config["lds"]["0.0.0.0_80"]
    assert listener["address"]["socketAddress"] == {"address": "0.0.0.0", "portValue": 80}
    [chain] = listener["filterChains"]
    hcm = chain["filters"][0]["typedConfig"]
    assert hcm["rds"]["routeConfigName"] == "http.80"
    assert hcm["statPrefix"] == "outbound_0.0.0.0_80"
    assert hcm["useRemoteAddress"] is True
    assert hcm["forwardClientCertDetails"] == "SANITIZE_SET"
    assert hcm["setCurrentClientCertDetails"] == {
        "subject": True,
        "cert": True,
        "dns": True,
        "uri": True,
    }
    assert list(config["rds"]) == ["http.80"]
    [vhost] = config["rds"]["http.80"]["virtualHosts"]
    assert vhost["name"] == "*:80" and vhost["domains"] == ["*"]
    assert (
        vhost["routes"][0]["route"]["cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    )
    # The gateway has the clusters (and endpoints) of what it routes to, and no sidecar parts.
    assert "outbound|9080||reviews.default.svc.cluster.local" in config["eds"]
    assert "BlackHoleCluster" in config["cds"]
    assert not {"PassthroughCluster", "InboundPassthroughCluster"} & set(config["cds"])


def test_a_gateway_whose_selector_does_not_match_gives_the_proxy_nothing() -> None:
    docs = (gateway(), bound("bookinfo", '["*"]', "[bookinfo-gateway]"))
    assert gateway_config(*docs, proxy=router({"istio": "egressgateway"}))["lds"] == {}
    assert gateway_config(*docs, proxy=router({"istio": "egressgateway"}))["rds"] == {}
    # No selector at all: every gateway proxy (istiod's rule).
    open_gateway = gateway(selector="{}")
    assert list(gateway_config(open_gateway, proxy=router({"any": "thing"}))["lds"]) == [
        "0.0.0.0_80"
    ]


def test_a_server_port_a_service_declares_listens_on_its_target_port() -> None:
    # The ingress Service maps 80 -> 8080 (Envoy need not bind a privileged port): the
    # listener and its routes take the target port, the virtual hosts keep the server's.
    ingress = meshes.join(
        meshes.service(
            "istio-ingressgateway",
            80,
            target_port=8080,
            app="istio-ingressgateway",
            namespace="istio-system",
        ),
        meshes.pod(
            "ingress-1",
            "10.9.0.1",
            app="istio-ingressgateway",
            labels=INGRESS,
            namespace="istio-system",
        ),
    )
    config = gateway_config(
        ingress, gateway(), bound("bookinfo", "[bookinfo.example.com]", "[bookinfo-gateway]")
    )
    assert list(config["lds"]) == ["0.0.0.0_8080"]
    assert list(config["rds"]) == ["http.8080"]
    assert list(vhosts(config, "http.8080")) == ["bookinfo.example.com:80"]


def test_a_host_the_server_does_not_list_gets_no_virtual_host_and_an_empty_table_404s() -> None:
    config = gateway_config(
        gateway(hosts="[bookinfo.example.com]"),
        bound("other", "[other.example.com]", "[bookinfo-gateway]"),
    )
    [vhost] = config["rds"]["http.80"]["virtualHosts"]
    assert vhost["name"] == "blackhole:80" and vhost["domains"] == ["*"]
    assert "routes" not in vhost  # Envoy answers 404 (NR)


def test_server_and_virtual_service_hosts_intersect_to_the_more_specific() -> None:
    config = gateway_config(
        gateway(hosts='["*.example.com", "shop.example.org"]'),
        bound("a", '["bookinfo.example.com", "x.other.net"]', "[bookinfo-gateway]"),
        bound("b", '["*.example.org"]', "[bookinfo-gateway]"),
    )
    hosts = vhosts(config)
    assert set(hosts) == {"bookinfo.example.com:80", "shop.example.org:80"}
    assert hosts["shop.example.org:80"]["domains"] == ["shop.example.org"]


def test_namespace_qualified_server_hosts_take_virtual_services_of_that_namespace_only() -> None:
    config = gateway_config(
        gateway(hosts='["prod/*", "./shared.example.com", "*/any.example.com"]'),
        bound("p", "[p.example.com]", "[default/bookinfo-gateway]", namespace="prod"),
        bound("q", "[q.example.com]", "[default/bookinfo-gateway]", namespace="test"),
        bound("s", "[shared.example.com]", "[default/bookinfo-gateway]", namespace="test"),
        bound("t", "[any.example.com]", "[default/bookinfo-gateway]", namespace="test"),
        bound("d", "[shared.example.com]", "[bookinfo-gateway]"),
    )
    # prod/* takes prod's p; ./ is the Gateway's namespace (default); */ anyone's.
    assert set(vhosts(config)) == {
        "p.example.com:80",
        "shared.example.com:80",
        "any.example.com:80",
    }
    shared = vhosts(config)["shared.example.com:80"]
    assert len(shared["routes"]) == 1  # only default's VirtualService, not test's


def test_gateway_names_bind_as_istiod_resolves_them() -> None:
    docs = (
        gateway(),
        # a bare name is in the VirtualService's namespace: this one names prod/bookinfo-gateway
        bound("elsewhere", "[elsewhere.example.com]", "[bookinfo-gateway]", namespace="prod"),
        bound(
            "qualified", "[qualified.example.com]", "[default/bookinfo-gateway]", namespace="prod"
        ),
        bound("legacy", "[legacy.example.com]", "[bookinfo-gateway.default.svc.cluster.local]"),
        bound("mesh-only", "[mesh.example.com]", "[mesh]"),
        bound("unbound", "[unbound.example.com]", "[]"),
    )
    assert set(vhosts(gateway_config(*docs))) == {
        "qualified.example.com:80",
        "legacy.example.com:80",
    }


def test_a_virtual_service_bound_to_mesh_and_a_gateway_reaches_both_and_gateway_only_not_mesh() -> (
    None
):
    both = meshes.resource(
        "VirtualService",
        "reviews",
        """
        hosts: [reviews]
        gateways: [mesh, bookinfo-gateway]
        http:
        - route: [{destination: {host: reviews, subset: v2}}]
        """,
    )
    gateway_only = meshes.resource(
        "VirtualService",
        "reviews",
        """
        hosts: [reviews]
        gateways: [bookinfo-gateway]
        http:
        - route: [{destination: {host: reviews, subset: v2}}]
        """,
    )
    v2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
    for docs, on_sidecar in ((both, True), (gateway_only, False)):
        side = compiled(snapshot_of(MESH, gateway(), docs), sidecar())["rds"]["9080"]
        [reviews] = [v for v in side["virtualHosts"] if v["name"].startswith("reviews")]
        assert (reviews["routes"][0]["route"].get("cluster") == v2) is on_sidecar
        gw = vhosts(gateway_config(gateway(), docs))
        assert gw["reviews.default.svc.cluster.local:80"]["routes"][0]["route"]["cluster"] == v2


def test_a_match_naming_gateways_applies_only_on_those() -> None:
    vs = meshes.resource(
        "VirtualService",
        "reviews",
        """
        hosts: [reviews]
        gateways: [mesh, bookinfo-gateway]
        http:
        - match: [{gateways: [bookinfo-gateway], uri: {prefix: /edge}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - match: [{gateways: [mesh], uri: {prefix: /inside}}]
          route: [{destination: {host: reviews, subset: v1}}]
        """,
    )
    gw = vhosts(gateway_config(gateway(), vs))["reviews.default.svc.cluster.local:80"]
    assert [r["match"]["prefix"] for r in gw["routes"]] == ["/edge"]
    side = compiled(snapshot_of(MESH, gateway(), vs), sidecar())["rds"]["9080"]
    [reviews] = [v for v in side["virtualHosts"] if v["name"].startswith("reviews")]
    assert [r["match"]["prefix"] for r in reviews["routes"]][0] == "/inside"


def test_canary_weights_reach_the_gateway_routes() -> None:
    vs = meshes.resource(
        "VirtualService",
        "bookinfo",
        """
        hosts: ["*"]
        gateways: [bookinfo-gateway]
        http:
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 80}
          - {destination: {host: reviews, subset: v2}, weight: 20}
        """,
    )
    [route] = vhosts(gateway_config(gateway(), vs))["*:80"]["routes"]
    clusters = route["route"]["weightedClusters"]["clusters"]
    assert [(c["name"].split("|")[2], c["weight"]) for c in clusters] == [("v1", 80), ("v2", 20)]


def test_http_servers_of_two_gateways_on_one_port_share_one_route_table() -> None:
    config = gateway_config(
        gateway("a", "[a.example.com]"),
        gateway("b", "[b.example.com]", port_name="http-b"),
        bound("va", "[a.example.com]", "[a]"),
        bound("vb", "[b.example.com]", "[b]"),
    )
    assert list(config["lds"]) == ["0.0.0.0_80"]
    assert len(config["lds"]["0.0.0.0_80"]["filterChains"]) == 1
    assert set(vhosts(config)) == {"a.example.com:80", "b.example.com:80"}


def test_a_server_of_another_protocol_on_a_taken_port_is_skipped_as_istiod_skips_it() -> None:
    docs = submissions(meshes.join(gateway("a"), gateway("b", protocol="TCP", port_name="tcp")))
    merged = merge_gateways([d.resource for d in docs])  # type: ignore[misc]
    assert [s.server.gateway for s in merged.skipped] == ["default/b"]
    assert "conflicts with the HTTP server" in merged.skipped[0].reason
    assert [p.name for p in merged.listeners] == ["0.0.0.0_80"]


def test_https_route_names_follow_istiod() -> None:
    docs = submissions(
        gateway(
            port=443,
            protocol="HTTPS",
            port_name="https-shop",
            extra="  tls: {mode: SIMPLE, credentialName: shop-cert}",
        )
    )
    merged = merge_gateways([d.resource for d in docs])  # type: ignore[misc]
    assert list(merged.routes) == ["https.443.https-shop.bookinfo-gateway.default"]


def test_a_tcp_server_forwards_by_the_first_matching_tcp_route_of_a_bound_service() -> None:
    echo = meshes.join(
        meshes.service("tcp-echo", 9000, port_name="tcp"),
        meshes.pod("tcp-echo-v1", "10.1.0.7", app="tcp-echo", version="v1"),
        meshes.subsets("tcp-echo", ["v1"]),
    )
    tcp_gateway = gateway(port=31400, protocol="TCP", port_name="tcp")
    vs = meshes.resource(
        "VirtualService",
        "tcp-echo",
        """
        hosts: ["*"]
        gateways: [bookinfo-gateway]
        tcp:
        - match: [{port: 9999}]
          route: [{destination: {host: nowhere}}]
        - match: [{port: 31400}]
          route:
          - {destination: {host: tcp-echo, port: {number: 9000}}, weight: 3}
          - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 1}
        """,
    )
    config = gateway_config(echo, tcp_gateway, vs)
    assert config["rds"] == {}
    [chain] = config["lds"]["0.0.0.0_31400"]["filterChains"]
    proxy = chain["filters"][0]["typedConfig"]
    assert proxy["@type"].endswith("TcpProxy")
    assert [(c["name"], c["weight"]) for c in proxy["weightedClusters"]["clusters"]] == [
        ("outbound|9000||tcp-echo.default.svc.cluster.local", 3),
        ("outbound|9000|v1|tcp-echo.default.svc.cluster.local", 1),
    ]
    # With no tcp route for the server, the listener has no chain and is left out.
    assert gateway_config(echo, tcp_gateway)["lds"] == {}


def test_two_virtual_services_for_one_gateway_host_share_it_catch_all_last() -> None:
    first = meshes.resource(
        "VirtualService",
        "a-everything",  # the older by istiod's order (a tie in time goes to the name)
        """
        hosts: [shop.example.com]
        gateways: [bookinfo-gateway]
        http: [{route: [{destination: {host: reviews, subset: v1}}]}]
        """,
    )
    second = meshes.resource(
        "VirtualService",
        "b-api",
        """
        hosts: [shop.example.com]
        gateways: [bookinfo-gateway]
        http:
        - match: [{uri: {prefix: /api}}]
          route: [{destination: {host: reviews, subset: v2}}]
        """,
    )
    [vhost] = gateway_config(gateway(), first, second)["rds"]["http.80"]["virtualHosts"]
    assert [
        (r["match"]["prefix"], r["route"]["cluster"].split("|")[2]) for r in vhost["routes"]
    ] == [
        ("/api", "v2"),
        ("/", "v1"),
    ]
