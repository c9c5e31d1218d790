"""Istio's webhook rules for VirtualService http routes and DestinationRules: each broken input
is rejected with the field path and a reason; valid inputs pass; deprecated or ineffective
settings are warnings."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from controlplane.api import Level, parse_resource, validate
from tests.support import meshes


def findings(text: str) -> list[tuple[str, str, str]]:
    resource = parse_resource(yaml.safe_load(textwrap.dedent(text)))
    return [(str(i.severity), i.path, i.reason) for i in validate(resource)]


def http(route: str) -> str:
    routes = yaml.safe_load(textwrap.dedent(route))
    return meshes.resource("VirtualService", "r", {"hosts": ["reviews"], "http": routes})


def rule(policy: str) -> str:
    traffic_policy = yaml.safe_load(textwrap.dedent(policy))
    return meshes.resource(
        "DestinationRule", "r", {"host": "reviews", "trafficPolicy": traffic_policy}
    )


DEST = "route: [{destination: {host: reviews}}]"

BROKEN_ROUTES = [
    (
        f"- {DEST}\n  headers: {{request: {{set: {{':path': /x}}}}}}",
        "spec.http[0].headers.request.set.:path",
        "':' prefix",
    ),
    (
        f"- {DEST}\n  headers: {{response: {{set: {{host: x}}}}}}",
        "spec.http[0].headers.response.set.host",
        "cannot set Host",
    ),
    (
        f"- {DEST}\n  headers: {{request: {{remove: [host]}}}}",
        "spec.http[0].headers.request.remove[0]",
        "cannot set Host",
    ),
    (
        f"- {DEST}\n  rewrite: {{authority: a}}\n  headers: {{request: {{set: {{host: b}}}}}}",
        "spec.http[0].headers.request.set.host",
        "multiple times",
    ),
    (f"- {DEST}\n  retries: {{attempts: -1}}", "spec.http[0].retries.attempts", "negative"),
    (
        f"- {DEST}\n  retries: {{attempts: 0, perTryTimeout: 1s}}",
        "spec.http[0].retries",
        "attempts are set to 0",
    ),
    (
        f"- {DEST}\n  retries: {{attempts: 2, retryOn: 'bogus'}}",
        "spec.http[0].retries.retryOn",
        "'bogus' is not a valid retry policy",
    ),
    (
        f"- {DEST}\n  retries: {{attempts: 2, perTryTimeout: 0.5ms}}",
        "spec.http[0].retries.perTryTimeout",
        "at least 1ms",
    ),
    (f"- {DEST}\n  fault: {{}}", "spec.http[0].fault", "abort or a delay"),
    (
        f"- {DEST}\n  fault: {{abort: {{httpStatus: 700, percentage: {{value: 1}}}}}}",
        "spec.http[0].fault.abort.httpStatus",
        "200 and 599",
    ),
    (
        f"- {DEST}\n  fault: {{abort: {{grpcStatus: NOPE}}}}",
        "spec.http[0].fault.abort.grpcStatus",
        "not supported",
    ),
    (
        f"- {DEST}\n  fault: {{abort: {{httpStatus: 500, percentage: {{value: 101}}}}}}",
        "spec.http[0].fault.abort.percentage.value",
        "percentage",
    ),
    (
        f"- {DEST}\n  fault: {{delay: {{exponentialDelay: 1s}}}}",
        "spec.http[0].fault.delay.exponentialDelay",
        "not supported yet",
    ),
    (
        "- redirect: {uri: /x}\n  rewrite: {uri: /y}",
        "spec.http[0]",
        "redirect cannot be combined",
    ),
    ("- redirect: {redirectCode: 301}", "spec.http[0].redirect", "at least one of uri"),
    ("- redirect: {uri: /x, redirectCode: 200}", "spec.http[0].redirect.redirectCode", "3xx"),
    (
        "- redirect: {uri: /x, redirectCode: 304}",
        "spec.http[0].redirect.redirectCode",
        "not supported by Envoy",
    ),
    ("- redirect: {uri: /x, scheme: ftp}", "spec.http[0].redirect.scheme", "http or https"),
    (f"- {DEST}\n  rewrite: {{}}", "spec.http[0].rewrite", "at least one of"),
    (
        f"- {DEST}\n  rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}",
        "spec.http[0].rewrite",
        "mutually exclusive",
    ),
    (
        f"- {DEST}\n  rewrite: {{uriRegexRewrite: {{match: '(a', rewrite: b}}}}",
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "invalid regex",
    ),
    (
        f"- {DEST}\n  mirror: {{host: reviews}}\n  mirrorPercentage: {{value: 120}}",
        "spec.http[0].mirrorPercentage.value",
        "between 0 and 100",
    ),
    (
        f"- {DEST}\n  mirrors: [{{destination: {{host: '*'}}}}]",
        "spec.http[0].mirrors[0].destination.host",
        "must not be '*'",
    ),
    (
        f"- {DEST}\n  corsPolicy: {{allowMethods: [FETCH]}}",
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    ),
    (
        f"- {DEST}\n  corsPolicy: {{allowOrigins: [{{exact: ''}}]}}",
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "not a valid allowed origin",
    ),
    (
        f"- {DEST}\n  corsPolicy: {{maxAge: 1500ms}}",
        "spec.http[0].corsPolicy.maxAge",
        "seconds precision",
    ),
    (
        f"- {DEST}\n  corsPolicy: {{allowHeaders: ['bad header']}}",
        "spec.http[0].corsPolicy.allowHeaders[0]",
        "not a valid header name",
    ),
    (
        f"- match: [{{uri: {{regex: '(?=x)'}}}}]\n  {DEST}",
        "spec.http[0].match[0].uri.regex",
        "not RE2",
    ),
    (
        f"- match: [{{headers: {{x-a: {{prefix: ''}}}}}}]\n  {DEST}",
        "spec.http[0].match[0].headers.x-a.prefix",
        "must not be empty",
    ),
    (
        f"- match: [{{sourceNamespace: Bad_NS}}]\n  {DEST}",
        "spec.http[0].match[0].sourceNamespace",
        "not a valid namespace",
    ),
    (f"- {DEST}\n  timeout: 1.0005s", "spec.http[0].timeout", "millisecond precision"),
]


@pytest.mark.parametrize(("route", "path", "reason"), BROKEN_ROUTES)
def test_broken_http_route_is_rejected_with_its_field_path(
    route: str, path: str, reason: str
) -> None:
    found = findings(http(route))
    errors = [(p, r) for level, p, r in found if level == str(Level.ERROR)]
    assert any(p == path and reason in r for p, r in errors), found


BROKEN_POLICIES = [
    ("connectionPool: {}", "spec.trafficPolicy.connectionPool", "at least one field"),
    (
        "connectionPool: {tcp: {maxConnections: -1}}",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "negative",
    ),
    (
        "connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "UPGRADE",
    ),
    (
        "connectionPool: {tcp: {tcpKeepalive: {time: 0.1ms}}}",
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
        "at least 1ms",
    ),
    (
        "outlierDetection: {maxEjectionPercent: 150}",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "between 0 and 100",
    ),
    (
        "outlierDetection: {consecutiveLocalOriginFailures: 3}",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
    ),
    (
        "loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required",
    ),
    (
        "loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 1000}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    ),
    (
        "loadBalancer: {consistentHash: {httpHeaderName: x, minimumRingSize: 10, ringHash: {}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "only one of",
    ),
    (
        "loadBalancer: {simple: RANDOM, consistentHash: {httpHeaderName: x}}",
        "spec.trafficPolicy.loadBalancer",
        "mutually exclusive",
    ),
    (
        "loadBalancer: {localityLbSetting: {distribute: [{from: r1, to: {r2: 50}}]}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "!= 100",
    ),
    (
        "loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}\n"
        "outlierDetection: {consecutive5xxErrors: 1}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "different regions",
    ),
    (
        "loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*/z', to: {r2: 100}}]}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from",
        "only at the end",
    ),
    (
        "loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0.5ms}",
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "at least 1ms",
    ),
    (
        "portLevelSettings: [{port: {number: 9080}}]",
        "spec.trafficPolicy.portLevelSettings[0]",
        "at least one field",
    ),
    (
        "portLevelSettings: [{loadBalancer: {simple: RANDOM}}]",
        "spec.trafficPolicy.portLevelSettings[0].port",
        "port is required",
    ),
]


@pytest.mark.parametrize(("policy", "path", "reason"), BROKEN_POLICIES)
def test_broken_traffic_policy_is_rejected_with_its_field_path(
    policy: str, path: str, reason: str
) -> None:
    found = findings(rule(policy))
    errors = [(p, r) for level, p, r in found if level == str(Level.ERROR)]
    assert any(p == path and reason in r for p, r in errors), found


def test_failover_without_outlier_detection_is_a_warning_not_an_error() -> None:
    found = findings(rule("loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}"))
    assert found == [
        (
            "Warning",
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
            "outlier detection policy must be provided for failover",
        )
    ]


def test_request_host_header_is_allowed_because_it_rewrites_the_authority() -> None:
    found = findings(http(f"- {DEST}\n  headers: {{request: {{set: {{host: b.example}}}}}}"))
    assert found == []


def test_a_full_featured_route_and_rule_have_no_findings() -> None:
    route = f"""
    - name: all
      match:
      - uri: {{prefix: /api}}
        method: {{exact: GET}}
        queryParams: {{debug: {{exact: "1"}}}}
        ignoreUriCase: true
      headers: {{request: {{add: {{x-a: b}}}}, response: {{remove: [server]}}}}
      timeout: 2s
      retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,503"}}
      fault: {{abort: {{httpStatus: 555, percentage: {{value: 0.5}}}}}}
      rewrite: {{uri: /v2}}
      mirror: {{host: shadow}}
      mirrorPercentage: {{value: 10}}
      corsPolicy: {{allowOrigins: [{{exact: "https://a"}}], allowMethods: [GET], maxAge: 1h}}
      {DEST}
    """
    assert findings(http(route)) == []
    policy = """
    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}
    connectionPool:
      tcp: {maxConnections: 5, connectTimeout: 1s, tcpKeepalive: {time: 60s}}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, idleTimeout: 5s}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s}
    """
    assert findings(rule(policy)) == []


def test_p2_fields_are_accepted_and_reported_as_not_supported_yet() -> None:
    found = findings(http(f"- {DEST}\n  match: [{{withoutHeaders: {{x-a: {{exact: b}}}}}}]"))
    assert found == [
        ("Warning", "spec.http[0].match[0].withoutHeaders", "not supported yet; ignored")
    ]
    found = findings(rule("connectionPool: {http: {useClientProtocol: true}}"))
    assert found == [
        (
            "Warning",
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
            "not supported yet; ignored",
        )
    ]
