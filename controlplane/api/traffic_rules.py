"""Validation rules for the HTTP-route parts and DestinationRule traffic policies that istiod's
webhook checks beyond the basics in ``validation``: header operations, retries, faults, CORS,
rewrites, mirrors, redirects, connection pools, outlier detection, load balancers and locality
settings. Each function returns findings with the field path as the user wrote it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.networking import (
    ConnectionPoolSettings,
    CorsPolicy,
    Headers,
    HTTPFaultInjection,
    HTTPRetry,
    HTTPRoute,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    OutlierDetection,
)

CheckDuration = Callable[[str, float | None], list[Issue]]
CheckRegex = Callable[[str, str], list[Issue]]

GRPC_STATUS_NAMES = frozenset(
    (
        "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
        "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
        "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
    ).split()
)
CORS_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
REDIRECT_CODES_ENVOY_SENDS = frozenset({301, 302, 303, 307, 308})
TOPOLOGY_LABELS = frozenset(
    {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
)
# RFC 9110 token characters: what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Control characters other than horizontal tab (protoc-gen-validate's header-value rule).
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAGLEV_MAX = 5000011


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def _is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


# ---- headers ------------------------------------------------------------------------------


def check_header_name(path: str, name: str) -> list[Issue]:
    """An HTTP header name is a token (RFC 9110): no spaces, colons or control characters.
    Envoy accepts other names in its config and then fails every request that carries one."""
    if not _HEADER_NAME.match(name):
        return [_error(path, f"{name!r} is not a valid HTTP header name (RFC 9110 token)")]
    return []


def check_header_value(path: str, value: str) -> list[Issue]:
    """No control characters but tab (CR, LF and NUL split or cut a header), and Envoy's
    ``%VARIABLE%`` syntax well formed (a literal percent sign is written ``%%``)."""
    if _HEADER_VALUE_FORBIDDEN.search(value):
        return [_error(path, f"header value {value!r} contains a control character (CR, LF, NUL)")]
    problem = _header_value_format_problem(value)
    if problem:
        return [_error(path, f"header value {value!r}: {problem}")]
    return []


def _header_value_format_problem(value: str) -> str | None:
    pos = 0
    while pos < len(value):
        if value[pos] != "%":
            pos += 1
            continue
        if pos + 1 == len(value):
            return "un-escaped '%' (write '%%' for a percent sign)"
        if value[pos + 1] == "%":
            pos += 2
            continue
        end = pos + 1
        depth = 0
        while end < len(value) and (value[end] != "%" or depth):
            if value[end] == "(":
                depth += 1
            elif value[end] == ")":
                depth -= 1
            end += 1
        if end >= len(value):
            return "a '%VARIABLE%' is not closed (write '%%' for a percent sign)"
        pos = end + 1
    return None


def check_header_operations(path: str, headers: Headers) -> list[Issue]:
    """Requests may set or add Host/:authority (it becomes a host rewrite); nothing else may
    touch pseudo-headers, and responses and removals may not touch Host."""
    found: list[Issue] = []
    for direction in ("request", "response"):
        ops = getattr(headers, direction)
        if ops is None:
            continue
        for op in ("set", "add"):
            for name, value in getattr(ops, op).items():
                hpath = f"{path}.{direction}.{op}.{name}"
                found += _check_name(hpath, name, allow_authority=direction == "request")
                found += check_header_value(hpath, value)
        for j, name in enumerate(ops.remove):
            found += _check_name(f"{path}.{direction}.remove[{j}]", name, allow_authority=False)
    return found


def _check_name(path: str, name: str, allow_authority: bool) -> list[Issue]:
    if not name:
        return [_error(path, "header name must not be empty")]
    if allow_authority and _is_authority(name):
        return []
    if name.lower() == "host":
        return [_error(path, f"invalid header {name!r}: cannot set Host header")]
    if name.startswith(":"):
        return [_error(path, f"invalid header {name!r}: header cannot have ':' prefix")]
    return check_header_name(path, name)


def check_authority_set_once(path: str, route: HTTPRoute) -> list[Issue]:
    """The authority can be rewritten in one place only: rewrite.authority or one header."""
    sources: list[str] = []
    if route.rewrite is not None and route.rewrite.authority:
        sources.append("rewrite.authority")
    request = route.headers.request if route.headers is not None else None
    if request is not None:
        for op in ("set", "add"):
            for name in getattr(request, op):
                if _is_authority(name):
                    sources.append(f"headers.request.{op}.{name}")
    if len(sources) > 1:
        return [
            _error(
                f"{path}.{sources[1]}",
                f"authority header cannot be set multiple times (already set by {sources[0]})",
            )
        ]
    return []


# ---- retries, faults, mirrors, rewrites, redirects, CORS ---------------------------------


def check_retries(path: str, retries: HTTPRetry, duration: CheckDuration) -> list[Issue]:
    found: list[Issue] = []
    if retries.attempts < 0:
        found.append(_error(f"{path}.attempts", "must not be negative"))
    if retries.attempts == 0 and (
        retries.per_try_timeout is not None
        or retries.retry_on
        or retries.retry_remote_localities is not None
    ):
        found.append(
            _error(path, "http retry policy configured when attempts are set to 0 (disabled)")
        )
    found += duration(f"{path}.perTryTimeout", retries.per_try_timeout)
    found += duration(f"{path}.backoff", retries.backoff)
    return found


def check_fault(path: str, fault: HTTPFaultInjection, duration: CheckDuration) -> list[Issue]:
    found: list[Issue] = []
    if fault.delay is not None and fault.delay.exponential_delay is not None:
        found.append(_error(f"{path}.delay.exponentialDelay", "exponentialDelay not supported yet"))
    abort = fault.abort
    if abort is not None:
        if abort.grpc_status is not None and abort.grpc_status not in GRPC_STATUS_NAMES:
            found.append(
                _error(
                    f"{path}.abort.grpcStatus",
                    f"gRPC status {abort.grpc_status!r} is not supported (e.g. 'NOT_FOUND')",
                )
            )
        if abort.http2_error is not None:
            found.append(
                _error(f"{path}.abort.http2Error", "HTTP/2 abort fault injection not supported yet")
            )
    if fault.delay is not None and fault.delay.percent is not None:
        found.append(_warning(f"{path}.delay.percent", "deprecated; use percentage instead"))
    return found


def check_mirror_percentage(path: str, value: float) -> list[Issue]:
    if value < 0 or value > 100:
        return [_error(path, f"mirror percentage must be between 0 and 100 (it has {value:g})")]
    return []


def check_rewrite(path: str, route: HTTPRoute, regex: CheckRegex) -> list[Issue]:
    rewrite = route.rewrite
    if rewrite is None:
        return []
    found: list[Issue] = []
    if not rewrite.uri and rewrite.uri_regex_rewrite is None and not rewrite.authority:
        found.append(
            _error(path, "rewrite must specify at least one of uri, uriRegexRewrite or authority")
        )
    regex_rewrite = rewrite.uri_regex_rewrite
    if regex_rewrite is not None and (not regex_rewrite.match or not regex_rewrite.rewrite):
        found.append(
            _error(f"{path}.uriRegexRewrite", "uriRegexRewrite needs both match and rewrite")
        )
    return found


def check_redirect_code(path: str, code: int | None) -> list[Issue]:
    if code is None or not 300 <= code <= 399 or code in REDIRECT_CODES_ENVOY_SENDS:
        return []
    return [
        _error(
            path, f"redirect code {code} is not supported by Envoy (use 301, 302, 303, 307 or 308)"
        )
    ]


def check_cors(path: str, policy: CorsPolicy, duration: CheckDuration) -> list[Issue]:
    found: list[Issue] = []
    for j, origin in enumerate(policy.allow_origins):
        value = origin.exact if origin.exact is not None else origin.prefix
        if value is None:
            value = origin.regex
        if not value:
            found.append(
                _error(f"{path}.allowOrigins[{j}]", "an empty match is not a valid allowed origin")
            )
    for j, method in enumerate(policy.allow_methods):
        if method not in CORS_METHODS:
            found.append(
                _error(f"{path}.allowMethods[{j}]", f"{method!r} is not a supported HTTP method")
            )
    for field, alias in (("allow_headers", "allowHeaders"), ("expose_headers", "exposeHeaders")):
        for j, name in enumerate(getattr(policy, field)):
            if not _HEADER_NAME.match(name):
                found.append(_error(f"{path}.{alias}[{j}]", f"{name!r} is not a valid header name"))
    if policy.max_age is not None:
        found += duration(f"{path}.maxAge", policy.max_age)
        if policy.max_age != int(policy.max_age):
            found.append(
                _error(f"{path}.maxAge", "max_age duration is accurate only to seconds precision")
            )
    return found


# ---- DestinationRule traffic policies -----------------------------------------------------


def check_connection_pool(
    path: str, pool: ConnectionPoolSettings, duration: CheckDuration
) -> list[Issue]:
    found: list[Issue] = []
    if pool.http is None and pool.tcp is None:
        found.append(_error(path, "connection pool must have at least one field"))
    http = pool.http
    if http is not None and http.h2_upgrade_policy == "UPGRADE" and http.use_client_protocol:
        found.append(
            _error(
                f"{path}.http.useClientProtocol",
                "use client protocol must not be true when h2UpgradePolicy is UPGRADE",
            )
        )
    tcp = pool.tcp
    if tcp is not None:
        found += duration(f"{path}.tcp.maxConnectionDuration", tcp.max_connection_duration)
        if tcp.idle_timeout:  # 0s turns the timeout off and is allowed
            found += duration(f"{path}.tcp.idleTimeout", tcp.idle_timeout)
        if tcp.tcp_keepalive is not None:
            found += duration(f"{path}.tcp.tcpKeepalive.time", tcp.tcp_keepalive.time)
            found += duration(f"{path}.tcp.tcpKeepalive.interval", tcp.tcp_keepalive.interval)
            if (tcp.tcp_keepalive.probes or 0) < 0:
                found.append(_error(f"{path}.tcp.tcpKeepalive.probes", "must not be negative"))
    return found


def check_outlier_detection(path: str, outlier: OutlierDetection) -> list[Issue]:
    found: list[Issue] = []
    if outlier.consecutive_errors:
        found.append(
            _warning(
                f"{path}.consecutiveErrors",
                "deprecated; use consecutiveGatewayErrors or consecutive5xxErrors instead",
            )
        )
    if (outlier.consecutive_local_origin_failures or 0) > 0 and not (
        outlier.split_external_local_origin_errors
    ):
        found.append(
            _error(
                f"{path}.consecutiveLocalOriginFailures",
                "needs splitExternalLocalOriginErrors: true",
            )
        )
    return found


def check_load_balancer(
    path: str, lb: LoadBalancerSettings, outlier: OutlierDetection | None
) -> list[Issue]:
    found: list[Issue] = []
    hash_lb = lb.consistent_hash
    if hash_lb is not None:
        hpath = f"{path}.consistentHash"
        keys = [
            k
            for k in (
                "http_header_name",
                "http_cookie",
                "use_source_ip",
                "http_query_parameter_name",
            )
            if getattr(hash_lb, k) not in (None, "", False)
        ]
        if len(keys) > 1:
            found.append(_error(hpath, "only one hash key may be set"))
        if hash_lb.http_cookie is not None and not hash_lb.http_cookie.name:
            found.append(_error(f"{hpath}.httpCookie.name", "name required for httpCookie"))
        if hash_lb.ring_hash is not None and hash_lb.maglev is not None:
            found.append(_error(hpath, "only one of ringHash or maglev may be set"))
        if hash_lb.minimum_ring_size:
            found.append(
                _warning(f"{hpath}.minimumRingSize", "deprecated; use ringHash.minimumRingSize")
            )
            if hash_lb.ring_hash is not None or hash_lb.maglev is not None:
                found.append(
                    _error(
                        f"{hpath}.minimumRingSize",
                        "only one of minimumRingSize or maglev/ringHash can be specified",
                    )
                )
        if hash_lb.maglev is not None:
            size = hash_lb.maglev.table_size or 0
            mpath = f"{hpath}.maglev.tableSize"
            if size == 0:
                found.append(_error(mpath, "tableSize must be set for maglev"))
            elif size >= _MAGLEV_MAX:
                found.append(_error(mpath, f"tableSize must be less than {_MAGLEV_MAX}"))
            elif not _is_prime(size):
                found.append(_error(mpath, "tableSize must be a prime number for maglev"))
    if lb.locality_lb_setting is not None:
        found += check_locality(f"{path}.localityLbSetting", lb.locality_lb_setting, outlier)
    return found


def _is_prime(n: int) -> bool:
    if n < 4:
        return n > 1
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


def check_locality(
    path: str, setting: LocalityLoadBalancerSetting, outlier: OutlierDetection | None
) -> list[Issue]:
    found: list[Issue] = []
    if setting.distribute and setting.failover:
        return [_error(path, "can not simultaneously specify 'distribute' and 'failover'")]
    if setting.failover and setting.failover_priority:
        for j, label in enumerate(setting.failover_priority):
            if label.partition("=")[0] in TOPOLOGY_LABELS:
                found.append(
                    _error(
                        f"{path}.failoverPriority[{j}]",
                        f"can not simultaneously set 'failover' and topology label {label!r}",
                    )
                )
    for i, rule in enumerate(setting.distribute):
        dpath = f"{path}.distribute[{i}]"
        found += _check_locality_pattern(f"{dpath}.from", rule.from_)
        for target, weight in rule.to.items():
            found += _check_locality_pattern(f"{dpath}.to.{target}", target)
            if not 1 <= weight <= 100:
                found.append(_error(f"{dpath}.to.{target}", "locality weight must be in [1, 100]"))
        total = sum(rule.to.values())
        if total != 100:
            found.append(_error(f"{dpath}.to", f"total locality weight {total} != 100"))
    if (setting.failover or setting.failover_priority) and outlier is None:
        found.append(_warning(path, "outlier detection policy must be provided for failover"))
    for i, failover in enumerate(setting.failover):
        fpath = f"{path}.failover[{i}]"
        if failover.from_ == failover.to:
            found.append(
                _error(fpath, "locality lb failover settings must specify different regions")
            )
        if "/" in failover.from_ or "/" in failover.to:
            found.append(_error(fpath, "locality lb failover only specifies regions"))
        if "*" in failover.from_ or "*" in failover.to:
            found.append(_error(fpath, "locality lb failover region must not contain '*'"))
    return found


def _check_locality_pattern(path: str, locality: str) -> list[Issue]:
    stars = locality.count("*")
    if stars > 1 or (stars == 1 and not locality.endswith("*")):
        return [_error(path, f"locality {locality!r}: at most one '*', and only at the end")]
    if any(part == "" for part in locality.split("/", 2)):
        return [_error(path, f"locality {locality!r} must not contain empty region/zone/subzone")]
    return []


def port_policy_is_empty(policy: Any) -> bool:
    return (
        policy.load_balancer is None
        and policy.connection_pool is None
        and policy.outlier_detection is None
        and policy.tls is None
    )
