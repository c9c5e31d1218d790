"""GAMMA: an HTTPRoute or GRPCRoute whose parent is a Service routes the mesh's traffic to it,
as a VirtualService does, with istiod's precedence against VirtualServices for the host."""

from __future__ import annotations

from typing import Any

from controlplane.compile.proxy import Proxy
from controlplane.store import Store
from controlplane.store.gamma import MESH_CONTROLLER
from tests.documents import submissions
from tests.unit.compile.helpers import compiled, local_proxy, snapshot_of

FQDN = "reviews.default.svc.cluster.local"

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: default}
spec:
  selector: {app: reviews, version: v2}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
"""


def http_route(
    name: str,
    rules: str,
    *,
    namespace: str = "default",
    parent: str = "reviews",
    parent_ns: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    kind: str = "HTTPRoute",
) -> str:
    ns_line = f", namespace: {parent_ns}" if parent_ns else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: "{created}", generation: 3}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}{ns_line}}}]
  rules:
{rules}
"""


def vs(name: str, subset_host: str, created: str, namespace: str = "default") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: "{created}"}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{{destination: {{host: {subset_host}.default.svc.cluster.local}}}}]
"""


SPLIT = """
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 80}
    - {name: reviews-v2, port: 9080, weight: 20}
"""


def reviews_host(docs: list[str], proxy: Proxy | None = None) -> dict[str, Any]:
    out = compiled(snapshot_of(SERVICES, *docs), proxy or local_proxy())
    config = next(iter(out["rds"].values()))
    return next(v for v in config["virtualHosts"] if v["name"] == f"{FQDN}:9080")


def cluster(name: str) -> str:
    return f"outbound|9080||{name}.default.svc.cluster.local"


def test_a_route_with_a_service_parent_splits_the_service_traffic_by_weight() -> None:
    host = reviews_host([http_route("split", SPLIT)])
    clusters = host["routes"][0]["route"]["weightedClusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == [
        (cluster("reviews-v1"), 80),
        (cluster("reviews-v2"), 20),
    ]


def test_without_a_route_the_service_gets_its_default_route() -> None:
    host = reviews_host([])
    assert host["routes"][0]["route"]["cluster"] == cluster("reviews")


def test_header_path_and_method_matches_become_envoy_matches_in_gateway_api_order() -> None:
    rules = """
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
  - matches: [{headers: [{name: End-User, value: jason}], path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: Exact, value: /api/exact}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
"""
    routes = reviews_host([http_route("m", rules)])["routes"]
    # Exact first; a PathPrefix is its path exactly and its path followed by "/" (whole
    # segments); for each, the match with a header comes first.
    seen = [
        (
            r["match"].get("path") or r["match"].get("prefix"),
            [h["name"] for h in r["match"].get("headers", [])],
            r["route"]["cluster"],
        )
        for r in routes
    ]
    assert seen[:5] == [
        ("/api/exact", [], cluster("reviews-v2")),
        ("/api", ["end-user"], cluster("reviews-v2")),
        ("/api", [], cluster("reviews-v1")),
        ("/api/", ["end-user"], cluster("reviews-v2")),
        ("/api/", [], cluster("reviews-v1")),
    ]


def test_a_route_with_a_gateway_parent_does_not_reach_sidecars() -> None:
    route = http_route("gw", SPLIT).replace(
        '{group: "", kind: Service, name: reviews}', "{name: ingress}"
    )
    host = reviews_host([route])
    assert host["routes"][0]["route"]["cluster"] == cluster("reviews")


def test_a_grpc_route_matches_service_and_method_on_the_path() -> None:
    rules = """
  - matches: [{method: {service: echo.Echo, method: Ping}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - backendRefs: [{name: reviews-v1, port: 9080}]
"""
    routes = reviews_host([http_route("g", rules, kind="GRPCRoute")])["routes"]
    assert routes[0]["match"]["path"] == "/echo.Echo/Ping"
    assert routes[0]["route"]["cluster"] == cluster("reviews-v2")
    assert routes[1]["route"]["cluster"] == cluster("reviews-v1")


# ---- precedence against VirtualServices (istiod: pilot/pkg/model/virtualservice.go) ------


def test_an_older_virtual_service_wins_over_a_newer_producer_route() -> None:
    docs = [
        vs("old", "reviews-v1", "2025-01-01T00:00:00Z"),
        http_route("new", SPLIT, created="2026-01-01T00:00:00Z"),
    ]
    # The client in "other": the producer's route is not its own namespace's.
    host = reviews_host(docs, local_proxy(namespace="other"))
    assert host["routes"][0]["route"]["cluster"] == cluster("reviews-v1")


def test_an_older_producer_route_wins_over_a_newer_virtual_service() -> None:
    docs = [
        vs("new", "reviews-v1", "2026-06-01T00:00:00Z"),
        http_route("old", SPLIT, created="2026-01-01T00:00:00Z"),
    ]
    host = reviews_host(docs, local_proxy(namespace="other"))
    assert "weightedClusters" in host["routes"][0]["route"]


def test_a_route_in_the_clients_namespace_wins_over_an_older_virtual_service() -> None:
    docs = [
        vs("old", "reviews-v1", "2025-01-01T00:00:00Z"),
        http_route("mine", SPLIT, created="2026-01-01T00:00:00Z"),
    ]
    host = reviews_host(docs, local_proxy(namespace="default"))
    assert "weightedClusters" in host["routes"][0]["route"]


def test_a_consumer_route_applies_only_to_clients_of_its_own_namespace() -> None:
    consumer = http_route("consumer", SPLIT, namespace="other", parent_ns="default")
    consumer = consumer.replace("{name: reviews-v1,", "{namespace: default, name: reviews-v1,")
    consumer = consumer.replace("{name: reviews-v2,", "{namespace: default, name: reviews-v2,")
    in_other = reviews_host([consumer], local_proxy(namespace="other"))
    in_default = reviews_host([consumer], local_proxy(namespace="default"))
    assert "weightedClusters" in in_other["routes"][0]["route"]
    assert in_default["routes"][0]["route"]["cluster"] == cluster("reviews")


def test_routes_of_one_namespace_for_one_service_merge_oldest_first() -> None:
    first = """
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
"""
    second = """
  - matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
"""
    docs = [
        http_route("second", second, created="2026-02-01T00:00:00Z"),
        http_route("first", first, created="2026-01-01T00:00:00Z"),
    ]
    routes = reviews_host(docs)["routes"]
    assert [r["route"]["cluster"] for r in routes[:2]] == [
        cluster("reviews-v1"),
        cluster("reviews-v2"),
    ]


def test_deleting_the_route_gives_the_service_its_default_route_back() -> None:
    from controlplane.api.issues import ResourceKey
    from controlplane.compile import SnapshotCompiler

    store = Store()
    store.apply(upserts=submissions(SERVICES + "---" + http_route("split", SPLIT)))
    assert store.snapshot.virtual_services_for(FQDN, "default")
    store.apply(deletes=[ResourceKey("HTTPRoute", "default", "split")])
    assert store.snapshot.virtual_services_for(FQDN, "default") == ()
    SnapshotCompiler(store.snapshot).compile(local_proxy())  # still compiles


def test_a_backend_that_is_not_a_service_is_dropped_and_none_left_answers_500() -> None:
    rules = """
  - backendRefs: [{group: example.com, kind: Bucket, name: b}]
"""
    route = reviews_host([http_route("bad", rules)])["routes"][0]
    assert route["directResponse"]["status"] == 500


def test_a_cross_namespace_backend_is_routed_without_a_reference_grant() -> None:
    rules = """
  - backendRefs: [{name: reviews-v9, namespace: shop, port: 9080}]
"""
    route = reviews_host([http_route("x", rules)])["routes"][0]
    assert route["route"]["cluster"] == "outbound|9080||reviews-v9.shop.svc.cluster.local"


def test_retry_and_timeouts_become_the_routes_retry_policy_and_timeout_as_in_istiod() -> None:
    rules = """
  - backendRefs: [{name: reviews-v1, port: 9080}]
    retry: {attempts: 3, codes: [502, 504]}
    timeouts: {request: 10s, backendRequest: 2s}
"""
    route = reviews_host([http_route("r", rules)])["routes"][0]["route"]
    assert route["timeout"] == "10s"
    assert route["retryPolicy"]["numRetries"] == 3
    assert route["retryPolicy"]["perTryTimeout"] == "2s"
    assert route["retryPolicy"]["retryOn"].startswith("connect-failure,refused-stream")
    assert route["retryPolicy"]["retriableStatusCodes"] == [502, 504]


# ---- route status for Service parents ----------------------------------------------------


def route_status(*docs: str, name: str = "split") -> dict[str, Any]:
    from controlplane.api.issues import ResourceKey

    snapshot = snapshot_of(SERVICES, *docs)
    return dict(snapshot.gateway_api_status[ResourceKey("HTTPRoute", "default", name)])


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    return {
        c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in entry["conditions"]
    }


def test_a_route_with_resolved_backends_is_accepted_on_its_service_parent() -> None:
    [entry] = route_status(http_route("split", SPLIT))["parents"]
    assert entry["parentRef"] == {"group": "", "kind": "Service", "name": "reviews"}
    assert entry["controllerName"] == MESH_CONTROLLER == "istio.io/gateway-controller"
    assert conditions(entry) == {
        "Accepted": ("True", "Accepted", 3),
        "ResolvedRefs": ("True", "ResolvedRefs", 3),
    }


def test_a_missing_backend_service_is_backend_not_found_with_its_field_path() -> None:
    rules = """
  - backendRefs: [{name: reviews-v1, port: 9080}, {name: gone, port: 9080}]
"""
    [entry] = route_status(http_route("split", rules))["parents"]
    resolved = next(c for c in entry["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert resolved["message"] == "spec.rules[0].backendRefs[1]: Service default/gone not found"


def test_a_backend_of_another_kind_is_invalid_kind() -> None:
    rules = """
  - backendRefs: [{group: example.com, kind: Bucket, name: b}]
"""
    [entry] = route_status(http_route("split", rules))["parents"]
    assert conditions(entry)["ResolvedRefs"][:2] == ("False", "InvalidKind")


def test_a_backend_in_another_namespace_needs_no_reference_grant_on_a_mesh_route() -> None:
    # As istiod: ReferenceGrants are enforced for Gateway parents only.
    shop = """
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v9, namespace: shop}
spec:
  ports: [{name: http, port: 9080}]
"""
    rules = """
  - backendRefs: [{name: reviews-v9, namespace: shop, port: 9080}]
"""
    [entry] = route_status(shop, http_route("split", rules))["parents"]
    assert conditions(entry)["ResolvedRefs"][:2] == ("True", "ResolvedRefs")


def test_a_route_with_a_gateway_and_a_service_parent_has_an_entry_for_each() -> None:
    route = http_route("split", SPLIT).replace(
        '[{group: "", kind: Service, name: reviews}]',
        '[{name: ingress}, {group: "", kind: Service, name: reviews, port: 9080}]',
    )
    kinds = [p["parentRef"]["kind"] for p in route_status(route)["parents"]]
    assert sorted(kinds) == ["Gateway", "Service"]


def test_a_route_whose_regex_re2_refuses_reaches_no_proxy_and_is_not_accepted() -> None:
    rules = """
  - matches: [{headers: [{type: RegularExpression, name: x, value: "(?<=a)b"}]}]
    backendRefs: [{name: reviews-v1, port: 9080}]
"""
    host = reviews_host([http_route("split", rules)])
    assert host["routes"][0]["route"]["cluster"] == cluster("reviews")  # the default route
    [entry] = route_status(http_route("split", rules))["parents"]
    accepted = next(c for c in entry["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert accepted["message"].startswith("spec.rules[0]: headers.x.regex: invalid regex")


MULTI = """
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: default}
spec:
  selector: {app: multi}
  ports: [{name: http, port: 9080}, {name: admin, port: 9090}]
"""


def section_route(section: str, port: str = "") -> str:
    extra = f", port: {port}" if port else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: default, generation: 3}}
spec:
  parentRefs: [{{group: "", kind: Service, name: multi, sectionName: {section}{extra}}}]
  rules: [{{backendRefs: [{{name: reviews-v1, port: 9080}}]}}]
"""


def multi_route(port: int, *docs: str) -> dict[str, Any]:
    out = compiled(snapshot_of(SERVICES, MULTI, *docs), local_proxy())
    name = f"multi.default.svc.cluster.local:{port}"
    hosts = [v for config in out["rds"].values() for v in config["virtualHosts"]]
    route: dict[str, Any] = next(v for v in hosts if v["name"] == name)["routes"][0]["route"]
    return route


def test_a_service_parents_section_name_attaches_the_route_to_that_port_only() -> None:
    doc = section_route("admin")
    # sectionName names the Service's port "admin" (9090): routed there ...
    assert multi_route(9090, doc)["cluster"] == cluster("reviews-v1")
    # ... and its other port keeps its default route.
    default = "outbound|9080||multi.default.svc.cluster.local"
    assert multi_route(9080, doc)["cluster"] == default
    [entry] = route_status(MULTI, doc)["parents"]
    assert entry["parentRef"]["sectionName"] == "admin"
    assert conditions(entry)["Accepted"] == ("True", "Accepted", 3)


def test_a_section_name_that_is_no_port_of_the_service_is_no_matching_parent() -> None:
    doc = section_route("metrics")
    assert multi_route(9080, doc)["cluster"] == "outbound|9080||multi.default.svc.cluster.local"
    assert multi_route(9090, doc)["cluster"] == "outbound|9090||multi.default.svc.cluster.local"
    [entry] = route_status(MULTI, doc)["parents"]
    accepted = next(c for c in entry["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingParent")
    assert accepted["message"] == (
        "spec.parentRefs[0].sectionName: Service default/multi has no port named 'metrics'"
    )
    # A port that disagrees with the named section attaches nowhere either.
    [entry] = route_status(MULTI, section_route("admin", "9080"))["parents"]
    assert conditions(entry)["Accepted"][:2] == ("False", "NoMatchingParent")


def test_a_backend_of_another_kind_keeps_its_share_which_answers_500() -> None:
    rules = """
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 1}
    - {group: example.com, kind: Bucket, name: b, weight: 3}
"""
    route = reviews_host([http_route("partly", rules)])["routes"][0]["route"]
    clusters = route["weightedClusters"]["clusters"]
    # istiod's UnknownService: a cluster that never exists, answered 500 (gateway semantics)
    assert [(c["name"], c["weight"]) for c in clusters] == [
        (cluster("reviews-v1"), 1),
        ("UnknownService", 3),
    ]
    assert route["clusterNotFoundResponseCode"] == "INTERNAL_SERVER_ERROR"
