"""VirtualService tcp and tls routes as filter chains of the service port's listener."""

from __future__ import annotations

from typing import Any

from controlplane.compile.proxy import Proxy, proxy_from_node
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of

REGISTRY = meshes.join(
    meshes.service(
        "db",
        ports=[{"name": "tcp", "port": 5432}, {"name": "tls", "port": 443}],
        cluster_ip="10.96.1.1",
    ),
    meshes.resource(
        "DestinationRule",
        "db",
        """
  host: db
  subsets: [{name: a, labels: {v: a}}, {name: b, labels: {v: b}}]
""",
    ),
)


def proxy(labels: dict[str, str] | None = None, namespace: str = "default") -> Proxy:
    return proxy_from_node(
        f"sidecar~10.1.0.5~client.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": labels or {}},
    )


def chains(
    vs: str, listener: str = "10.96.1.1_5432", client: Proxy | None = None
) -> list[dict[str, Any]]:
    out = compiled(snapshot_of(REGISTRY, vs), client or proxy())
    return list(out["lds"][listener]["filterChains"])


def vs(body: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db]
{body}"""


def proxy_config(chain: dict[str, Any]) -> dict[str, Any]:
    [flt] = chain["filters"]
    assert flt["name"] == "envoy.filters.network.tcp_proxy"
    return dict(flt["typedConfig"])


def test_weighted_tcp_route_becomes_tcp_proxy_weighted_clusters() -> None:
    [chain] = chains(
        vs(
            """  tcp:
  - route:
    - {destination: {host: db, subset: a}, weight: 3}
    - {destination: {host: db, subset: b}, weight: 1}
    - {destination: {host: db, subset: b}, weight: 0}
"""
        )
    )
    weighted = proxy_config(chain)["weightedClusters"]["clusters"]
    assert weighted == [
        {"name": "outbound|5432|a|db.default.svc.cluster.local", "weight": 3},
        {"name": "outbound|5432|b|db.default.svc.cluster.local", "weight": 1},
    ]


def test_destination_subnet_match_comes_first_and_the_catch_all_ends_the_chains() -> None:
    found = chains(
        vs(
            """  tcp:
  - match: [{destinationSubnets: [10.96.1.0/24]}]
    route: [{destination: {host: db, subset: a}}]
  - route: [{destination: {host: db, subset: b}}]
  - route: [{destination: {host: db}}]
"""
        )
    )
    assert len(found) == 2
    assert found[0]["filterChainMatch"] == {
        "prefixRanges": [{"addressPrefix": "10.96.1.0", "prefixLen": 24}]
    }
    assert proxy_config(found[0])["cluster"] == "outbound|5432|a|db.default.svc.cluster.local"
    assert "filterChainMatch" not in found[1]
    assert proxy_config(found[1])["cluster"] == "outbound|5432|b|db.default.svc.cluster.local"


def test_a_tcp_route_for_another_port_leaves_the_default_cluster() -> None:
    [chain] = chains(
        vs("  tcp:\n  - match: [{port: 9999}]\n    route: [{destination: {host: db, subset: a}}]\n")
    )
    assert proxy_config(chain)["cluster"] == "outbound|5432||db.default.svc.cluster.local"


def test_source_labels_and_gateways_of_a_tcp_match_are_decided_per_proxy() -> None:
    body = vs(
        """  tcp:
  - match: [{sourceLabels: {app: admin}}]
    route: [{destination: {host: db, subset: a}}]
  - match: [{gateways: [some-gateway]}]
    route: [{destination: {host: db, subset: b}}]
"""
    )
    [admin] = chains(body, client=proxy({"app": "admin"}))
    assert proxy_config(admin)["cluster"] == "outbound|5432|a|db.default.svc.cluster.local"
    [other] = chains(body, client=proxy({"app": "web"}))
    assert proxy_config(other)["cluster"] == "outbound|5432||db.default.svc.cluster.local"


def test_tls_routes_match_sni_with_the_tls_inspector_and_fall_back_to_the_service() -> None:
    body = vs(
        """  tls:
  - match: [{sniHosts: [a.db.example]}]
    route: [{destination: {host: db, port: {number: 443}, subset: a}}]
  - match: [{sniHosts: ["*.db.example"], port: 443}]
    route: [{destination: {host: db, port: {number: 443}, subset: b}}]
"""
    )
    out = compiled(snapshot_of(REGISTRY, body), proxy())
    listener = out["lds"]["10.96.1.1_443"]
    first, second, fallback = listener["filterChains"]
    assert first["filterChainMatch"] == {
        "serverNames": ["a.db.example"],
        "transportProtocol": "tls",
    }
    assert second["filterChainMatch"]["serverNames"] == ["*.db.example"]
    assert proxy_config(second)["cluster"] == "outbound|443|b|db.default.svc.cluster.local"
    assert proxy_config(fallback)["cluster"] == "outbound|443||db.default.svc.cluster.local"
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"
    ]
    # The TCP port's listener needs no inspector.
    assert "listenerFilters" not in out["lds"]["10.96.1.1_5432"]


def test_two_matches_with_the_same_subnets_keep_the_first_only() -> None:
    found = chains(
        vs(
            """  tcp:
  - match: [{destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: db, subset: a}}]
  - match: [{destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: db, subset: b}}]
"""
        )
    )
    assert [proxy_config(c)["cluster"].split("|")[2] for c in found] == ["a", ""]


def test_an_http_only_virtual_service_does_not_hide_an_older_tcp_one() -> None:
    tcp = vs("  tcp:\n  - route: [{destination: {host: db, subset: a}}]\n").replace(
        "metadata: {name: db, namespace: default}",
        'metadata: {name: db-tcp, namespace: default, creationTimestamp: "2026-06-01T00:00:00Z"}',
    )
    http = vs("  http:\n  - route: [{destination: {host: db}}]\n").replace(
        "metadata: {name: db, namespace: default}",
        'metadata: {name: db-http, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}',
    )
    out = compiled(snapshot_of(REGISTRY, http, tcp), proxy())
    [chain] = out["lds"]["10.96.1.1_5432"]["filterChains"]
    assert proxy_config(chain)["cluster"] == "outbound|5432|a|db.default.svc.cluster.local"
