"""Compile a snapshot to the exact Envoy resources for routing, weights, subsets and matches."""

from __future__ import annotations

from tests.support import meshes
from tests.unit.compile.helpers import REVIEWS, compiled, local_proxy, snapshot_of

VS_90_10 = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - timeout: 3s
    retries: {attempts: 4, perTryTimeout: 500ms, retryOn: "5xx,504"}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"""

FQDN = "reviews.default.svc.cluster.local"


def test_each_service_port_and_subset_becomes_an_eds_cluster_named_as_istio_names_it() -> None:
    out = compiled(snapshot_of(REVIEWS), local_proxy())
    assert set(out["cds"]) == {
        f"outbound|9080||{FQDN}",
        f"outbound|9080|v1|{FQDN}",
        f"outbound|9080|v2|{FQDN}",
    }
    cluster = out["cds"][f"outbound|9080|v1|{FQDN}"]
    assert cluster["type"] == "EDS"
    assert cluster["edsClusterConfig"]["serviceName"] == f"outbound|9080|v1|{FQDN}"
    assert cluster["edsClusterConfig"]["edsConfig"] == {"ads": {}, "resourceApiVersion": "V3"}
    assert cluster["connectTimeout"] == "10s"
    assert cluster["lbPolicy"] == "LEAST_REQUEST"


def test_subset_endpoints_are_the_pods_with_the_subset_labels_at_the_target_port() -> None:
    out = compiled(snapshot_of(REVIEWS), local_proxy())

    def addresses(name: str) -> list[tuple[str, int]]:
        cla = out["eds"][name]
        return [
            (
                e["endpoint"]["address"]["socketAddress"]["address"],
                e["endpoint"]["address"]["socketAddress"]["portValue"],
            )
            for group in cla.get("endpoints", [])
            for e in group["lbEndpoints"]
        ]

    assert addresses(f"outbound|9080|v1|{FQDN}") == [("10.0.0.1", 8080)]
    assert addresses(f"outbound|9080|v2|{FQDN}") == [("10.0.0.2", 8080)]
    assert addresses(f"outbound|9080||{FQDN}") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]


def test_local_listener_routes_by_host_through_rds() -> None:
    out = compiled(snapshot_of(REVIEWS), local_proxy(port=15001))
    listener = out["lds"]["127.0.0.1_15001"]
    assert listener["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": 15001}
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["rds"]["routeConfigName"] == "local_15001"
    assert [f["name"] for f in hcm["httpFilters"]][-1] == "envoy.filters.http.router"


def test_weights_become_weighted_clusters_with_timeout_and_retries() -> None:
    out = compiled(snapshot_of(REVIEWS, VS_90_10), local_proxy())
    vhost = out["rds"]["local_15001"]["virtualHosts"][0]
    assert vhost["name"] == f"{FQDN}:9080"
    [route] = vhost["routes"]
    assert route["match"] == {"prefix": "/"}
    action = route["route"]
    assert action["weightedClusters"]["clusters"] == [
        {"name": f"outbound|9080|v1|{FQDN}", "weight": 90},
        {"name": f"outbound|9080|v2|{FQDN}", "weight": 10},
    ]
    assert action["timeout"] == "3s"
    retry = action["retryPolicy"]
    assert retry["numRetries"] == 4
    assert retry["perTryTimeout"] == "0.500s"
    assert retry["retryOn"] == "5xx,retriable-status-codes"
    assert retry["retriableStatusCodes"] == [504]


def test_weights_are_relative_and_zero_weights_are_dropped() -> None:
    vs = VS_90_10.replace("weight: 90", "weight: 7").replace("weight: 10", "weight: 0")
    out = compiled(snapshot_of(REVIEWS, vs), local_proxy())
    action = out["rds"]["local_15001"]["virtualHosts"][0]["routes"][0]["route"]
    assert action["cluster"] == f"outbound|9080|v1|{FQDN}"
    assert "weightedClusters" not in action


def test_service_without_virtual_service_gets_the_default_route_and_istio_default_retries() -> None:
    out = compiled(snapshot_of(REVIEWS), local_proxy())
    [route] = out["rds"]["local_15001"]["virtualHosts"][0]["routes"]
    assert route["name"] == "default"
    action = route["route"]
    assert action["cluster"] == f"outbound|9080||{FQDN}"
    assert action["timeout"] == "0s"
    retry = action["retryPolicy"]
    assert retry["numRetries"] == 2
    assert (
        retry["retryOn"]
        == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert retry["retriableStatusCodes"] == [503]
    assert retry["hostSelectionRetryMaxAttempts"] == "5"
    assert retry["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_zero_retry_attempts_turns_retries_off() -> None:
    vs = VS_90_10.replace(
        'retries: {attempts: 4, perTryTimeout: 500ms, retryOn: "5xx,504"}', "retries: {attempts: 0}"
    )
    out = compiled(snapshot_of(REVIEWS, vs), local_proxy())
    action = out["rds"]["local_15001"]["virtualHosts"][0]["routes"][0]["route"]
    assert "retryPolicy" not in action


def test_domains_follow_short_name_resolution_from_the_client_namespace() -> None:
    same = compiled(snapshot_of(REVIEWS), local_proxy("default"))["rds"]["local_15001"][
        "virtualHosts"
    ][0]
    other = compiled(snapshot_of(REVIEWS), local_proxy("prod"))["rds"]["local_15001"][
        "virtualHosts"
    ][0]
    expected_other = [
        FQDN,
        f"{FQDN}:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
    ]
    assert other["domains"] == expected_other
    assert same["domains"] == [*expected_other, "reviews", "reviews:9080"]


MATCHES = meshes.resource(
    "VirtualService",
    "reviews",
    """
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    - name: beta
      uri: {prefix: /beta}
      headers: {x-beta: {}}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - uri: {exact: /health}
    - uri: {regex: "/api/v[0-9]+/.*"}
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v2}
""",
)


def test_each_match_is_its_own_route_in_order_and_nothing_follows_a_catch_all() -> None:
    out = compiled(snapshot_of(REVIEWS, MATCHES), local_proxy())
    routes = out["rds"]["local_15001"]["virtualHosts"][0]["routes"]
    assert [r.get("name", "") for r in routes] == ["jason", "jason.beta", "", "", ""]
    assert routes[0]["match"] == {
        "prefix": "/",
        "headers": [{"name": "end-user", "stringMatch": {"exact": "jason"}}],
    }
    assert routes[1]["match"] == {
        "prefix": "/beta",
        "headers": [{"name": "x-beta", "presentMatch": True}],
    }
    assert routes[2]["match"] == {"path": "/health"}
    assert routes[3]["match"] == {"safeRegex": {"regex": "/api/v[0-9]+/.*"}}
    assert routes[4]["match"] == {"prefix": "/"}
    assert routes[4]["route"]["cluster"] == f"outbound|9080|v1|{FQDN}"
    assert len(routes) == 5  # the last http entry is unreachable and not generated


def test_identical_proxies_share_one_compiled_resource() -> None:
    from controlplane.compile import SnapshotCompiler
    from controlplane.compile.resources import ROUTE

    compiler = SnapshotCompiler(snapshot_of(REVIEWS, VS_90_10))
    a = compiler.compile(local_proxy())
    b = compiler.compile(local_proxy())
    assert a.of(ROUTE)["local_15001"] is b.of(ROUTE)["local_15001"]
