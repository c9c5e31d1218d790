"""Every HTTPRoute field compiles to the exact Envoy route fields istiod produces for it."""

from __future__ import annotations

from typing import Any

from tests.unit.compile.helpers import REVIEWS, compiled, local_proxy, snapshot_of

FQDN = "reviews.default.svc.cluster.local"
V1 = f"outbound|9080|v1|{FQDN}"
V2 = f"outbound|9080|v2|{FQDN}"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"


def vs(http: str) -> str:
    body = "\n".join("  " + line for line in http.strip("\n").splitlines())
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
{body}
"""


def routes_of(*docs: str) -> list[dict[str, Any]]:
    out = compiled(snapshot_of(REVIEWS, *docs), local_proxy())
    return list(out["rds"]["local_15001"]["virtualHosts"][0]["routes"])


def test_method_authority_and_scheme_become_pseudo_header_matchers_after_the_named_headers() -> (
    None
):
    [route, _] = routes_of(
        vs("""
- name: api
  match:
  - name: post
    uri: {prefix: /api}
    ignoreUriCase: true
    method: {exact: POST}
    authority: {prefix: reviews}
    scheme: {regex: "https?"}
    headers:
      x-b: {}
      x-a: {prefix: v}
    queryParams:
      debug: {}
      user: {exact: jason}
  route:
  - destination: {host: reviews, subset: v1}
- route:
  - destination: {host: reviews, subset: v2}
""")
    )
    assert route["name"] == "api.post"
    assert route["match"] == {
        "prefix": "/api",
        "caseSensitive": False,
        "headers": [
            {"name": "x-a", "stringMatch": {"prefix": "v"}},
            {"name": "x-b", "presentMatch": True},
            {"name": ":method", "stringMatch": {"exact": "POST"}},
            {"name": ":authority", "stringMatch": {"prefix": "reviews"}},
            {"name": ":scheme", "stringMatch": {"safeRegex": {"regex": "https?"}}},
        ],
        "queryParameters": [
            {"name": "debug", "presentMatch": True},
            {"name": "user", "stringMatch": {"exact": "jason"}},
        ],
    }


def test_a_regex_catch_all_ends_the_route_list_like_a_prefix_slash() -> None:
    routes = routes_of(
        vs("""
- match: [{uri: {regex: ".*"}}]
  route: [{destination: {host: reviews, subset: v1}}]
- route: [{destination: {host: reviews, subset: v2}}]
""")
    )
    assert len(routes) == 1 and routes[0]["match"] == {"safeRegex": {"regex": ".*"}}


def test_header_set_comes_before_add_each_sorted_and_host_becomes_a_host_rewrite() -> None:
    [route] = routes_of(
        vs("""
- headers:
    request:
      set: {x-z: "1", x-a: "2", host: reviews.example}
      add: {x-added: "3"}
      remove: [x-secret]
    response:
      set: {x-served-by: mesh}
      add: {x-trace: "t"}
      remove: [server]
  route:
  - destination: {host: reviews, subset: v1}
    headers:
      request: {set: {x-dest: v1}}
      response: {remove: [x-backend]}
""")
    )
    assert route["requestHeadersToAdd"] == [
        {"header": {"key": "x-a", "value": "2"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-z", "value": "1"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-added", "value": "3"}},  # APPEND_IF_EXISTS_OR_ADD is the zero value
        {"header": {"key": "x-dest", "value": "v1"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
    ]
    assert route["requestHeadersToRemove"] == ["x-secret"]
    assert route["responseHeadersToAdd"] == [
        {
            "header": {"key": "x-served-by", "value": "mesh"},
            "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD",
        },
        {"header": {"key": "x-trace", "value": "t"}},
    ]
    assert route["responseHeadersToRemove"] == ["server", "x-backend"]
    assert route["route"]["hostRewriteLiteral"] == "reviews.example"


def test_weighted_destinations_carry_their_own_header_operations_and_authority() -> None:
    [route] = routes_of(
        vs("""
- route:
  - destination: {host: reviews, subset: v1}
    weight: 75
    headers: {request: {add: {x-v: "1"}, set: {":authority": v1.example}}}
  - destination: {host: reviews, subset: v2}
    weight: 25
""")
    )
    clusters = route["route"]["weightedClusters"]["clusters"]
    assert clusters[0] == {
        "name": V1,
        "weight": 75,
        "requestHeadersToAdd": [{"header": {"key": "x-v", "value": "1"}}],
        "hostRewriteLiteral": "v1.example",
    }
    assert clusters[1] == {"name": V2, "weight": 25}
    assert "requestHeadersToAdd" not in route


def test_rewrite_uri_and_authority_become_prefix_and_host_rewrites() -> None:
    [first, second] = routes_of(
        vs("""
- match: [{uri: {prefix: /old}}]
  rewrite: {uri: /new, authority: internal.reviews}
  route: [{destination: {host: reviews, subset: v1}}]
- rewrite:
    uriRegexRewrite: {match: "^/v([0-9]+)/(.*)$", rewrite: "/\\\\2?version=\\\\1"}
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    assert first["route"]["prefixRewrite"] == "/new"
    assert first["route"]["hostRewriteLiteral"] == "internal.reviews"
    assert second["route"]["regexRewrite"] == {
        "pattern": {"regex": "^/v([0-9]+)/(.*)$"},
        "substitution": "/\\2?version=\\1",
    }


def test_redirect_becomes_a_redirect_action_without_the_default_port_of_its_scheme() -> None:
    routes = routes_of(
        vs("""
- match: [{uri: {exact: /a}}]
  redirect: {uri: /b, authority: new.example, scheme: https, port: 8443, redirectCode: 308}
- match: [{uri: {exact: /c}}]
  redirect: {authority: plain.example, port: 80}
- match: [{uri: {exact: /d}}]
  redirect: {uri: /e, derivePort: FROM_REQUEST_PORT}
""")
    )
    assert routes[0]["redirect"] == {
        "hostRedirect": "new.example",
        "pathRedirect": "/b",
        "schemeRedirect": "https",
        "portRedirect": 8443,
        "responseCode": "PERMANENT_REDIRECT",
    }
    assert routes[1]["redirect"] == {"hostRedirect": "plain.example"}  # 301 is the zero value
    assert routes[2]["redirect"] == {"pathRedirect": "/e", "portRedirect": 9080}
    assert all("route" not in r for r in routes)


def test_fault_percentages_are_per_million_and_a_delay_without_percentage_applies_to_none() -> None:
    [route] = routes_of(
        vs("""
- fault:
    abort: {httpStatus: 555, percentage: {value: 50}}
    delay: {fixedDelay: 1.5s}
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    fault = route["typedPerFilterConfig"][FAULT]
    assert fault["@type"] == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    assert fault["abort"] == {
        "httpStatus": 555,
        "percentage": {"numerator": 500000, "denominator": "MILLION"},
    }
    assert fault["delay"] == {"fixedDelay": "1.500s", "percentage": {}}


def test_grpc_abort_uses_the_status_code_number() -> None:
    [route] = routes_of(
        vs("""
- fault:
    abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.1}}
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    assert route["typedPerFilterConfig"][FAULT]["abort"] == {
        "grpcStatus": 14,
        "percentage": {"numerator": 1000, "denominator": "MILLION"},
    }


def test_mirror_and_mirrors_become_request_mirror_policies_and_zero_percent_mirrors_nothing() -> (
    None
):
    # mirror and mirrors in separate routes: istiod refuses a route with both (issue 11)
    [first, second, third] = routes_of(
        vs("""
- match: [{uri: {prefix: /a}}]
  mirror: {host: reviews, subset: v2}
  mirrorPercentage: {value: 25.5}
  route: [{destination: {host: reviews, subset: v1}}]
- match: [{uri: {prefix: /b}}]
  mirrors:
  - destination: {host: reviews, subset: v1}
  - destination: {host: reviews, subset: v2}
    percentage: {value: 0}
  route: [{destination: {host: reviews, subset: v1}}]
- mirror: {host: reviews, subset: v2}
  mirrorPercentage: {value: 0}
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    assert first["route"]["requestMirrorPolicies"] == [
        {
            "cluster": V2,
            "runtimeFraction": {"defaultValue": {"numerator": 255000, "denominator": "MILLION"}},
            "traceSampled": False,
        },
    ]
    assert second["route"]["requestMirrorPolicies"] == [
        {
            "cluster": V1,
            "runtimeFraction": {"defaultValue": {"numerator": 100}},
            "traceSampled": False,
        },
    ]
    assert "requestMirrorPolicies" not in third["route"]


def test_cors_policy_is_per_route_config_of_the_cors_filter() -> None:
    [route] = routes_of(
        vs("""
- corsPolicy:
    allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.b\\\\.example"}]
    allowMethods: [GET, POST]
    allowHeaders: [x-a, x-b]
    exposeHeaders: [x-c]
    maxAge: 24h
    allowCredentials: true
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    cors = route["typedPerFilterConfig"][CORS]
    assert cors == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allowOriginStringMatch": [
            {"exact": "https://a.example"},
            {"safeRegex": {"regex": "https://.*\\.b\\.example"}},
        ],
        "allowMethods": "GET,POST",
        "allowHeaders": "x-a,x-b",
        "exposeHeaders": "x-c",
        "maxAge": "86400",
        "allowCredentials": True,
        "filterEnabled": {"defaultValue": {"numerator": 100}},
        "forwardNotMatchingPreflights": True,
    }


def test_retry_on_status_codes_adds_retriable_status_codes_and_keeps_the_other_options() -> None:
    [route] = routes_of(
        vs("""
- retries:
    attempts: 3
    perTryTimeout: 250ms
    retryOn: "gateway-error, 503,connect-failure"
    retryRemoteLocalities: true
    backoff: 50ms
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    retry = route["route"]["retryPolicy"]
    assert retry["retryOn"] == "gateway-error,connect-failure,retriable-status-codes"
    assert retry["retriableStatusCodes"] == [503]
    assert retry["numRetries"] == 3
    assert retry["perTryTimeout"] == "0.250s"
    assert retry["retryBackOff"] == {"baseInterval": "0.050s"}
    assert retry["retryPriority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert retry["retryPriority"]["typedConfig"]["updateFrequency"] == 2
    assert retry["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_attempts_without_retry_on_keep_istio_default_conditions() -> None:
    [route] = routes_of(
        vs("""
- retries: {attempts: 5}
  timeout: 2s
  route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    action = route["route"]
    assert action["retryPolicy"]["numRetries"] == 5
    assert (
        action["retryPolicy"]["retryOn"]
        == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert action["retryPolicy"]["retriableStatusCodes"] == [503]
    assert action["timeout"] == "2s"
    assert action["maxGrpcTimeout"] == "2s"
    assert "maxStreamDuration" not in action  # it would turn the route timeout off


HASH_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie: {name: session, path: /, ttl: 60s}
  - name: v2
    labels: {version: v2}
"""


def test_consistent_hash_destination_gets_a_hash_policy_and_no_previous_hosts_predicate() -> None:
    [route] = routes_of(HASH_RULE, vs("- route: [{destination: {host: reviews, subset: v2}}]"))
    action = route["route"]
    assert action["hashPolicy"] == [{"header": {"headerName": "x-user"}}]
    assert "retryHostPredicate" not in action["retryPolicy"]


def test_subset_hash_key_overrides_the_top_level_one() -> None:
    [route] = routes_of(HASH_RULE, vs("- route: [{destination: {host: reviews, subset: v1}}]"))
    assert route["route"]["hashPolicy"] == [
        {"cookie": {"name": "session", "path": "/", "ttl": "60s"}}
    ]


def test_weighted_consistent_hash_destinations_keep_the_predicate_as_istiod_does() -> None:
    [route] = routes_of(
        HASH_RULE,
        vs("""
- route:
  - {destination: {host: reviews, subset: v1}, weight: 50}
  - {destination: {host: reviews, subset: v2}, weight: 50}
"""),
    )
    action = route["route"]
    assert len(action["hashPolicy"]) == 2
    assert action["retryPolicy"]["retryHostPredicate"]


def test_service_without_virtual_service_gets_the_rule_hash_policy_on_its_default_route() -> None:
    [route] = routes_of(HASH_RULE)
    assert route["name"] == "default"
    assert route["route"]["hashPolicy"] == [{"header": {"headerName": "x-user"}}]
    # istiod builds the default route's retry policy without looking at the hash.
    assert route["route"]["retryPolicy"]["retryHostPredicate"]


def test_source_ip_and_query_parameter_hash_keys() -> None:
    for key, expected in (
        ("{useSourceIp: true}", {"connectionProperties": {"sourceIp": True}}),
        ("{httpQueryParameterName: user}", {"queryParameter": {"name": "user"}}),
    ):
        rule = HASH_RULE.replace("{httpHeaderName: x-user}", key)
        [route] = routes_of(rule, vs("- route: [{destination: {host: reviews, subset: v2}}]"))
        assert route["route"]["hashPolicy"] == [expected]


def test_a_lone_destination_with_weight_zero_still_takes_the_traffic() -> None:
    [route] = routes_of(vs("- route: [{destination: {host: reviews, subset: v1}, weight: 0}]"))
    assert route["route"]["cluster"] == V1


def test_the_http_connection_manager_runs_fault_then_cors_then_the_router() -> None:
    out = compiled(snapshot_of(REVIEWS), local_proxy())
    hcm = out["lds"]["127.0.0.1_15001"]["filterChains"][0]["filters"][0]["typedConfig"]
    assert [f["name"] for f in hcm["httpFilters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]


def test_a_match_for_named_gateways_only_is_left_out_of_sidecar_routes() -> None:
    routes = routes_of(
        vs("""
- match:
  - {uri: {prefix: /edge}, gateways: [istio-system/ingress]}
  - {uri: {prefix: /both}, gateways: [istio-system/ingress, mesh], sourceLabels: {app: nobody}}
  route: [{destination: {host: reviews, subset: v2}}]
- route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    assert [r["match"].get("prefix") for r in routes] == ["/both", "/"]
