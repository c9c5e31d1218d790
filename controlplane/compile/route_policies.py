"""Translations of the per-route parts of an HTTPRoute that are not routing decisions:
header operations, fault injection, CORS, mirroring, redirects, consistent-hash policies.

Each function takes the Istio model and returns the Envoy message (or None when the field asks
for nothing), following istiod's ``route.go`` translations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from controlplane.api.networking import (
    ConsistentHashLB,
    CorsPolicy,
    Destination,
    Headers,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRoute,
    Percent,
    StringMatch,
)
from controlplane.compile.protos import duration

GRPC_STATUS = {
    name: code
    for code, name in enumerate(
        (
            "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
            "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
            "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
        ).split()
    )
}
REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    if match.exact is not None:
        return string_pb2.StringMatcher(exact=match.exact)
    if match.prefix is not None:
        return string_pb2.StringMatcher(prefix=match.prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.regex or ""))


# ---- percentages --------------------------------------------------------------------------


def per_million(percent: Percent) -> percent_pb2.FractionalPercent:
    """Istio's Percent (a double, 0-100) as Envoy's fraction per million (truncated, as Go)."""
    return percent_pb2.FractionalPercent(
        numerator=int(percent.value * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def per_hundred(value: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED
    )


# ---- headers ------------------------------------------------------------------------------


@dataclass
class HeaderOperations:
    request_to_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    request_to_remove: list[str] = field(default_factory=list)
    response_to_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    response_to_remove: list[str] = field(default_factory=list)
    authority: str = ""  # a request set/add of Host/:authority becomes a host rewrite


def _is_internal(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _header_options(
    values: dict[str, str], append: bool
) -> tuple[list[base_pb2.HeaderValueOption], str]:
    action = (
        base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    authority = ""
    out = []
    for name in sorted(values):
        if _is_authority(name):
            authority = values[name]
        if _is_internal(name):
            continue  # Envoy refuses to modify pseudo-headers and Host this way
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=values[name]), append_action=action
            )
        )
    return out, authority


def header_operations(headers: Headers | None) -> HeaderOperations:
    """``set`` overwrites (or adds), ``add`` appends; set entries come first, each sorted."""
    ops = HeaderOperations()
    if headers is None:
        return ops
    if headers.request is not None:
        req = headers.request
        set_options, set_authority = _header_options(req.set, append=False)
        add_options, add_authority = _header_options(req.add, append=True)
        ops.request_to_add = set_options + add_options
        ops.authority = set_authority or add_authority
        ops.request_to_remove = [n for n in req.remove if not _is_internal(n)]
    if headers.response is not None:
        resp = headers.response
        set_options, _ = _header_options(resp.set, append=False)
        add_options, _ = _header_options(resp.add, append=True)
        ops.response_to_add = set_options + add_options
        ops.response_to_remove = [n for n in resp.remove if not _is_internal(n)]
    return ops


# ---- fault injection ----------------------------------------------------------------------


def http_fault(fault: HTTPFaultInjection | None) -> fault_pb2.HTTPFault | None:
    """Per-route config of the fault filter. A delay or abort without a percentage applies to
    no request, as in Istio (only the deprecated integer ``percent`` has a different default)."""
    if fault is None:
        return None
    out = fault_pb2.HTTPFault()
    delay = fault.delay
    if delay is not None and delay.fixed_delay is not None:
        out.delay.fixed_delay.CopyFrom(duration(delay.fixed_delay))
        out.delay.percentage.CopyFrom(
            per_million(delay.percentage)
            if delay.percentage is not None
            else per_hundred(delay.percent or 0)
        )
    abort = fault.abort
    if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
        if abort.http_status is not None:
            out.abort.http_status = abort.http_status
        else:
            out.abort.grpc_status = GRPC_STATUS.get(abort.grpc_status or "", 2)
        if abort.percentage is not None:
            out.abort.percentage.CopyFrom(per_million(abort.percentage))
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


# ---- CORS ---------------------------------------------------------------------------------


def cors_policy(policy: CorsPolicy | None) -> cors_pb2.CorsPolicy | None:
    """Per-route config of the CORS filter."""
    if policy is None:
        return None
    out = cors_pb2.CorsPolicy(
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=per_hundred(100)),
        # Preflights that match no origin go on to the application unless told otherwise.
        forward_not_matching_preflights=wrappers_pb2.BoolValue(
            value=policy.unmatched_preflights != "IGNORE"
        ),
    )
    if policy.allow_origins:
        out.allow_origin_string_match.extend(string_matcher(m) for m in policy.allow_origins)
    elif policy.allow_origin:
        out.allow_origin_string_match.extend(
            string_pb2.StringMatcher(exact=o) for o in policy.allow_origin
        )
    if policy.allow_credentials is not None:
        out.allow_credentials.value = policy.allow_credentials
    if policy.max_age is not None:
        out.max_age = str(int(policy.max_age))
    return out


# ---- mirroring ----------------------------------------------------------------------------


def mirror_fraction(
    percentage: Percent | None, legacy_percent: int | None = None
) -> base_pb2.RuntimeFractionalPercent | None:
    """None when mirroring is explicitly set to 0%; 100% when no percentage is given."""
    if percentage is not None:
        if percentage.value <= 0:
            return None
        return base_pb2.RuntimeFractionalPercent(default_value=per_million(percentage))
    if legacy_percent is not None:
        if legacy_percent <= 0:
            return None
        return base_pb2.RuntimeFractionalPercent(default_value=per_hundred(legacy_percent))
    return base_pb2.RuntimeFractionalPercent(default_value=per_hundred(100))


def mirror_policy(
    cluster: str, fraction: base_pb2.RuntimeFractionalPercent
) -> rc.RouteAction.RequestMirrorPolicy:
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=cluster,
        runtime_fraction=fraction,
        trace_sampled=wrappers_pb2.BoolValue(value=False),
    )


def route_mirror_fractions(
    http: HTTPRoute,
) -> list[tuple[Destination, base_pb2.RuntimeFractionalPercent]]:
    """(destination, fraction) for ``mirror`` and each of ``mirrors``, skipping 0%."""
    out: list[tuple[Destination, base_pb2.RuntimeFractionalPercent]] = []
    if http.mirror is not None:
        fraction = mirror_fraction(http.mirror_percentage, http.mirror_percent)
        if fraction is not None:
            out.append((http.mirror, fraction))
    for mirror in http.mirrors:
        fraction = mirror_fraction(mirror.percentage)
        if fraction is not None:
            out.append((mirror.destination, fraction))
    return out


# ---- redirect -----------------------------------------------------------------------------


def redirect_action(redirect: HTTPRedirect, listener_port: int) -> rc.RedirectAction | None:
    """None for a redirect code Envoy cannot send (validation reports it)."""
    code = REDIRECT_CODES.get(redirect.redirect_code or 301)
    if code is None:
        return None
    out = rc.RedirectAction(response_code=code)
    if redirect.authority:
        out.host_redirect = redirect.authority
    if redirect.uri:
        out.path_redirect = redirect.uri
    elif redirect.prefix_rewrite:  # the Gateway API's ReplacePrefixMatch (store/gatewayapi.py)
        out.prefix_rewrite = redirect.prefix_rewrite
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    port: int | None = None
    if redirect.port:
        port = redirect.port
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        # Envoy cannot derive it, but routes are built per listener port, so we know it.
        port = listener_port
    if port is not None or redirect.derive_port is not None:
        scheme = redirect.scheme or "http"
        # No explicit :80 / :443 for the scheme's own port.
        if port is not None and not (
            (port == 80 and scheme == "http") or (port == 443 and scheme == "https")
        ):
            out.port_redirect = port
    return out


# ---- consistent hashing -------------------------------------------------------------------


def hash_policy(lb: ConsistentHashLB | None) -> rc.RouteAction.HashPolicy | None:
    """The route half of a consistent-hash DestinationRule (the cluster half is its lb_policy)."""
    if lb is None:
        return None
    if lb.http_header_name:
        return rc.RouteAction.HashPolicy(
            header=rc.RouteAction.HashPolicy.Header(header_name=lb.http_header_name)
        )
    if lb.http_cookie is not None:
        cookie = rc.RouteAction.HashPolicy.Cookie(name=lb.http_cookie.name)
        if lb.http_cookie.path:
            cookie.path = lb.http_cookie.path
        if lb.http_cookie.ttl is not None:
            cookie.ttl.CopyFrom(duration(lb.http_cookie.ttl))
        return rc.RouteAction.HashPolicy(cookie=cookie)
    if lb.use_source_ip:
        return rc.RouteAction.HashPolicy(
            connection_properties=rc.RouteAction.HashPolicy.ConnectionProperties(source_ip=True)
        )
    if lb.http_query_parameter_name:
        return rc.RouteAction.HashPolicy(
            query_parameter=rc.RouteAction.HashPolicy.QueryParameter(
                name=lb.http_query_parameter_name
            )
        )
    return None
