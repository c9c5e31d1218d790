"""Validation of a single resource, as istiod's admission webhook would do it.

``validate`` returns every finding (errors and warnings) with the field path. It looks at one
resource alone; checks that need the rest of the mesh (a subset that no DestinationRule
defines, a host nobody serves) live in ``controlplane.store.context``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from pydantic import BaseModel

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.networking import (
    Destination,
    DestinationRule,
    HTTPRoute,
    L4MatchAttributes,
    StringMatch,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
    TrafficPolicy,
    VirtualService,
)
from controlplane.api.resources import key_of
from controlplane.api.support import is_supported
from controlplane.api.traffic_rules import (
    check_authority_set_once,
    check_connection_pool,
    check_cors,
    check_fault,
    check_header_name,
    check_header_operations,
    check_load_balancer,
    check_mirror_percentage,
    check_outlier_detection,
    check_redirect_code,
    check_retries,
    check_rewrite,
    port_policy_is_empty,
)
from controlplane.api.unsupported import UNSUPPORTED_KINDS, validate_unsupported

Validator = Callable[[Any], list[Issue]]
_VALIDATORS: dict[str, Validator] = {}


def register_validator(kind: str, validator: Validator) -> None:
    _VALIDATORS[kind] = validator


def validate(resource: Any) -> list[Issue]:
    """Every finding about ``resource`` on its own: errors, then unsupported-field warnings."""
    key = key_of(resource)
    validator = _VALIDATORS.get(resource.kind)
    found = check_object_meta(resource.kind, resource.metadata.name, resource.metadata.namespace)
    found += validator(resource) if validator else []
    if isinstance(resource.spec if hasattr(resource, "spec") else None, BaseModel):
        found += unsupported_fields(resource.kind, resource.spec, "spec")
    return [issue.with_context(key, None) for issue in found]


# ---- unsupported fields -------------------------------------------------------------------


def unsupported_fields(kind: str, model: BaseModel, path: str) -> list[Issue]:
    """Warnings for fields that are set but that the compiler does not implement yet.

    Only the outermost unsupported field of a subtree is reported.
    """
    found: list[Issue] = []
    _walk(kind, model, path, path, found)
    return found


def _walk(kind: str, model: BaseModel, concrete: str, generic: str, found: list[Issue]) -> None:
    fields = type(model).model_fields
    for name in sorted(model.model_fields_set):
        if name not in fields:
            continue
        value = getattr(model, name)
        if value is None or value == [] or value == {}:
            continue
        alias = fields[name].alias or name
        _walk_value(kind, value, f"{concrete}.{alias}", f"{generic}.{alias}", found)


def _walk_value(kind: str, value: Any, concrete: str, generic: str, found: list[Issue]) -> None:
    if not is_supported(kind, generic):
        found.append(Issue(Codes.UNSUPPORTED_FIELD, concrete, "not supported yet; ignored"))
        return
    if isinstance(value, BaseModel):
        _walk(kind, value, concrete, generic, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                _walk(kind, item, f"{concrete}[{i}]", generic, found)
    elif isinstance(value, dict):
        for k, item in value.items():
            if isinstance(item, BaseModel):
                _walk(kind, item, f"{concrete}.{k}", f"{generic}.*", found)


# ---- shared rules -------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# Kubernetes' name rules per kind (apimachinery's validation): a Service name is a DNS-1035
# label, a Namespace a DNS-1123 label, everything else we read (custom resources included) a
# DNS-1123 subdomain. A namespace is always a DNS-1123 label.
_NAME_RULES: dict[str, tuple[str, re.Pattern[str], int]] = {
    "Service": (
        "a DNS-1035 label (lower case letters, digits and '-', starting with a letter)",
        _DNS1035_LABEL,
        63,
    ),
    "Namespace": ("a DNS-1123 label (lower case letters, digits and '-')", _DNS1123_LABEL, 63),
}
_SUBDOMAIN_RULE = (
    "a DNS-1123 subdomain (lower case letters, digits, '-' and '.')",
    _DNS1123_SUBDOMAIN,
    253,
)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def check_object_meta(kind: str, name: str, namespace: str) -> list[Issue]:
    """metadata.name and metadata.namespace as the Kubernetes apiserver validates them."""
    found: list[Issue] = []
    what, pattern, limit = _NAME_RULES.get(kind, _SUBDOMAIN_RULE)
    if not name:
        found.append(_error("metadata.name", "name is required"))
    elif len(name) > limit or not pattern.match(name):
        found.append(
            _error("metadata.name", f"{name!r} is not {what} of at most {limit} characters")
        )
    if namespace and (len(namespace) > 63 or not _DNS1123_LABEL.match(namespace)):
        found.append(
            _error(
                "metadata.namespace",
                f"{namespace!r} is not a DNS-1123 label (lower case letters, digits and '-', "
                "at most 63 characters)",
            )
        )
    return found


_HOST = re.compile(r"^(\*|\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?\.?)*$")
# A VirtualService bound to gateways with TLS routes may name SNI hosts such as Envoy's
# ``outbound_.15010_._.istiod...`` cluster names (istiod allows '_' there).
_SNI_HOST = re.compile(r"^(\*|\*\.)?([a-zA-Z0-9_]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9_])?\.?)*$")
_RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def check_regex(path: str, pattern: str) -> list[Issue]:
    """Envoy compiles regexes with RE2 (so does istiod's check): RE2's own parser decides.
    At most 1,024 characters, as istiod allows."""
    if pattern == "":
        return [_error(path, "regex must not be empty")]
    if len(pattern) > 1024:
        return [_error(path, "regex must be at most 1024 characters")]
    try:
        re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        return [
            _error(path, f"invalid regex {pattern!r}: {detail} (not RE2 syntax, which Envoy uses)")
        ]
    return []


def check_string_match(path: str, match: StringMatch, allow_empty_prefix: bool) -> list[Issue]:
    set_fields = [f for f in ("exact", "prefix", "regex") if getattr(match, f) is not None]
    if len(set_fields) > 1:
        return [
            _error(
                path, f"only one of exact, prefix or regex may be set (got {', '.join(set_fields)})"
            )
        ]
    if match.regex is not None:
        return check_regex(f"{path}.regex", match.regex)
    if match.prefix == "" and not allow_empty_prefix:
        return [_error(f"{path}.prefix", "prefix must not be empty")]
    return []


def check_duration(path: str, seconds: float | None) -> list[Issue]:
    if seconds is None:
        return []
    if seconds < 0.001:
        return [_error(path, "duration must be at least 1ms")]
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        return [_error(path, "duration must have millisecond precision")]
    return []


def check_port(path: str, port: int | None) -> list[Issue]:
    if port is not None and not 1 <= port <= 65535:
        return [_error(path, f"port {port} must be between 1 and 65535")]
    return []


def check_host(
    path: str, host: str, allow_wildcard: bool = True, allow_underscore: bool = False
) -> list[Issue]:
    if not host:
        return [_error(path, "host is required")]
    if host == "*" and not allow_wildcard:
        return [_error(path, "host must not be '*'")]
    pattern = _SNI_HOST if allow_underscore else _HOST
    if not pattern.match(host) or ".." in host or len(host) > 253:
        return [_error(path, f"{host!r} is not a valid host name")]
    if "*" in host.lstrip("*"):
        return [_error(path, f"{host!r}: a wildcard is only allowed as the first label")]
    return []


def check_cidr(path: str, value: str) -> list[Issue]:
    """An IP address or CIDR block such as 10.0.0.0/8."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return [_error(path, f"{value!r} is not an IP address or CIDR block")]
    return []


def check_export_to(path: str, export_to: list[str]) -> list[Issue]:
    found: list[Issue] = []
    if len(set(export_to)) != len(export_to):
        found.append(_error(path, "exportTo must not contain duplicates"))
    if "*" in export_to and len(export_to) > 1:
        found.append(_error(path, "'*' must not be mixed with other exportTo entries"))
    for i, ns in enumerate(export_to):
        if ns not in ("*", ".", "~") and not _DNS1123_LABEL.match(ns):
            found.append(_error(f"{path}[{i}]", f"{ns!r} is not a valid namespace"))
    return found


def check_destination(path: str, dest: Destination) -> list[Issue]:
    found = check_host(f"{path}.host", dest.host, allow_wildcard=False)
    if dest.subset is not None and not _DNS1123_LABEL.match(dest.subset):
        found.append(_error(f"{path}.subset", f"{dest.subset!r} is not a valid subset name"))
    if dest.port is not None:
        found += check_port(f"{path}.port.number", dest.port.number)
    return found


# ---- VirtualService -----------------------------------------------------------------------


def validate_virtual_service(vs: VirtualService) -> list[Issue]:
    spec = vs.spec
    found: list[Issue] = []
    if not spec.http and not spec.tcp and not spec.tls:
        found.append(_error("spec", "a VirtualService needs at least one of http, tcp or tls"))
    mesh_bound = not spec.gateways or "mesh" in spec.gateways
    if not spec.hosts:
        # A VirtualService without hosts is a delegate (reached by http[].delegate), as in
        # istiod: it may carry HTTP routes only, and no gateways.
        for field, present in (("gateways", spec.gateways), ("tls", spec.tls), ("tcp", spec.tcp)):
            if present:
                found.append(
                    _error(f"spec.{field}", f"a delegate VirtualService (no hosts) has no {field}")
                )
    if not spec.gateways or "mesh" in spec.gateways:
        for i, route in enumerate(spec.http):
            for j, match in enumerate(route.match):
                for group, alias in (("headers", "headers"), ("without_headers", "withoutHeaders")):
                    for name in getattr(match, group):
                        if name.startswith("@request.auth.claims"):
                            found.append(
                                _error(
                                    f"spec.http[{i}].match[{j}].{alias}.{name}",
                                    "JWT claim based routing is only supported for gateways",
                                )
                            )
    seen: set[str] = set()
    for i, host in enumerate(spec.hosts):
        path = f"spec.hosts[{i}]"
        if host == "*" and mesh_bound:
            found.append(_error(path, "'*' is not allowed for a VirtualService bound to the mesh"))
            continue
        found += check_host(path, host, allow_underscore=not mesh_bound and bool(spec.tls))
        if host in seen:
            found.append(_error(path, f"duplicate host {host!r}"))
        else:
            # as istiod: one host covered by another (``*.bar`` covers ``*.foo.bar``)
            for other in sorted(seen):
                if _host_covers(other, host) or _host_covers(host, other):
                    found.append(_error(path, f"duplicate hosts: {other!r} and {host!r} overlap"))
                    break
        seen.add(host)
    found += check_export_to("spec.exportTo", spec.export_to)
    found += validate_virtual_service_gateways(vs)
    for i, route in enumerate(spec.http):
        found += _validate_http_route(f"spec.http[{i}]", route)
    l4_routes: tuple[tuple[str, Sequence[TCPRoute | TLSRoute]], ...] = (
        ("tcp", spec.tcp),
        ("tls", spec.tls),
    )
    for proto, routes in l4_routes:
        for i, l4 in enumerate(routes):
            found += _validate_weights(f"spec.{proto}[{i}]", [d.weight for d in l4.route])
            for j, dest in enumerate(l4.route):
                found += check_destination(
                    f"spec.{proto}[{i}].route[{j}].destination", dest.destination
                )
            matches: Sequence[L4MatchAttributes | TLSMatchAttributes] = l4.match
            for j, m in enumerate(matches):
                found += check_port(f"spec.{proto}[{i}].match[{j}].port", m.port)
                for k, subnet in enumerate(m.destination_subnets):
                    found += check_cidr(
                        f"spec.{proto}[{i}].match[{j}].destinationSubnets[{k}]", subnet
                    )
            if proto == "tls":
                for j, tls_match in enumerate(l4.match):
                    if not getattr(tls_match, "sni_hosts", None):
                        found.append(
                            _error(f"spec.tls[{i}].match[{j}].sniHosts", "sniHosts is required")
                        )
            if not l4.route:
                found.append(
                    _error(f"spec.{proto}[{i}].route", "at least one route destination is required")
                )
    return found


# ---- VirtualService gateway names -----------------------------------------------------------


def check_gateway_names(path: str, names: list[str]) -> list[Issue]:
    """istiod's validateGatewayNames: ``mesh``, ``ns/name``, a bare name, or the legacy
    ``name.ns...`` form (accepted with a warning)."""
    found: list[Issue] = []
    for i, name in enumerate(names):
        where = f"{path}[{i}]"
        namespace, slash, short = name.partition("/")
        if not slash:
            if "." in name:
                parts = name.split(".")
                found.append(
                    _gateway_warning(
                        where,
                        f"using legacy gatewayName format {name!r}; prefer the "
                        f"<namespace>/<name> format: '{parts[1]}/{parts[0]}'",
                    )
                )
            if not _is_fqdn(name):
                found.append(_error(where, f"{name!r} is not a valid gateway name"))
            continue
        if not namespace or not short:
            found.append(_error(where, "config namespace and gateway name cannot be empty"))
            continue
        if not _DNS1123_LABEL.match(namespace):
            found.append(_error(where, f"invalid value for namespace: {namespace!r}"))
        if not _DNS1123_LABEL.match(short):
            found.append(_error(where, f"invalid value for gateway name: {short!r}"))
    return found


def _is_fqdn(name: str) -> bool:
    if not name or len(name) > 255:
        return False
    return all(_DNS1123_LABEL.match(label) for label in name.rstrip(".").split("."))


def validate_virtual_service_gateways(vs: VirtualService) -> list[Issue]:
    """The gateway names of ``spec.gateways`` and of each match's ``gateways``."""
    found = check_gateway_names("spec.gateways", vs.spec.gateways)
    for i, http in enumerate(vs.spec.http):
        for j, match in enumerate(http.match):
            found += check_gateway_names(f"spec.http[{i}].match[{j}].gateways", match.gateways)
    for i, tcp in enumerate(vs.spec.tcp):
        for j, l4 in enumerate(tcp.match):
            found += check_gateway_names(f"spec.tcp[{i}].match[{j}].gateways", l4.gateways)
    for i, tls in enumerate(vs.spec.tls):
        for j, sni in enumerate(tls.match):
            found += check_gateway_names(f"spec.tls[{i}].match[{j}].gateways", sni.gateways)
    return found


def _gateway_warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


_ENVOY_MAX_TOTAL_WEIGHT = 2**32 - 1  # Envoy sums weighted clusters into a uint32


def _host_covers(wide: str, narrow: str) -> bool:
    if wide == narrow or wide == "*":
        return True
    return wide.startswith("*") and narrow.endswith(wide[1:]) and len(narrow) > len(wide) - 1


def _validate_weights(path: str, weights: list[int | None]) -> list[Issue]:
    found: list[Issue] = []
    for j, weight in enumerate(weights):
        if weight is not None and weight < 0:
            found.append(_error(f"{path}.route[{j}].weight", "must not be negative"))
    total = sum(w or 0 for w in weights)
    if total > _ENVOY_MAX_TOTAL_WEIGHT:
        found.append(
            _error(
                f"{path}.route",
                f"the weights add up to {total}, more than Envoy's limit of "
                f"{_ENVOY_MAX_TOTAL_WEIGHT}",
            )
        )
    if len(weights) > 1 and sum(w or 0 for w in weights) == 0 and not found:
        found.append(
            _error(
                f"{path}.route",
                "the weights of all destinations are 0; at least one must be positive",
            )
        )
    return found


def _validate_http_route(path: str, route: HTTPRoute) -> list[Issue]:
    found: list[Issue] = []
    has_route = bool(route.route)
    if not (has_route or route.redirect or route.direct_response or route.delegate):
        found.append(
            _error(path, "an HTTP route needs route, redirect, directResponse or delegate")
        )
    if has_route and route.redirect:
        found.append(_error(path, "route and redirect are mutually exclusive"))
    if route.redirect and (route.fault or route.rewrite):
        found.append(_error(path, "redirect cannot be combined with fault or rewrite"))
    if has_route and route.direct_response:
        found.append(_error(path, "route and directResponse are mutually exclusive"))
    found += _validate_weights(path, [d.weight for d in route.route])
    for j, dest in enumerate(route.route):
        found += check_destination(f"{path}.route[{j}].destination", dest.destination)
        if dest.headers:
            found += check_header_operations(f"{path}.route[{j}].headers", dest.headers)
    for j, match in enumerate(route.match):
        mpath = f"{path}.match[{j}]"
        if match.uri is not None:
            found += check_string_match(f"{mpath}.uri", match.uri, allow_empty_prefix=True)
        for field in ("scheme", "method", "authority"):
            value = getattr(match, field)
            if value is not None:
                found += check_string_match(f"{mpath}.{field}", value, allow_empty_prefix=False)
        for group in ("headers", "query_params", "without_headers"):
            alias = {"query_params": "queryParams", "without_headers": "withoutHeaders"}.get(
                group, group
            )
            for name, value in getattr(match, group).items():
                found += check_string_match(
                    f"{mpath}.{alias}.{name}", value, allow_empty_prefix=False
                )
                if group != "query_params" and name != name.lower():
                    found.append(
                        _error(f"{mpath}.{alias}.{name}", "header names must be lowercase")
                    )
                elif group != "query_params" and not _is_pseudo_or_claim(name):
                    found += check_header_name(f"{mpath}.{alias}.{name}", name)
        found += check_port(f"{mpath}.port", match.port)
        if match.source_namespace is not None and not _DNS1123_LABEL.match(match.source_namespace):
            found.append(
                _error(
                    f"{mpath}.sourceNamespace",
                    f"{match.source_namespace!r} is not a valid namespace",
                )
            )
    found += check_duration(f"{path}.timeout", route.timeout)
    if route.retries is not None:
        rpath = f"{path}.retries"
        found += check_retries(rpath, route.retries, check_duration)
        for policy in (route.retries.retry_on or "").split(","):
            policy = policy.strip()
            if policy.isdigit() and 100 <= int(policy) <= 599:
                continue
            if policy and policy not in _RETRY_ON:
                found.append(_error(f"{rpath}.retryOn", f"{policy!r} is not a valid retry policy"))
    if route.fault is not None:
        found += _validate_fault(f"{path}.fault", route)
        found += check_fault(f"{path}.fault", route.fault, check_duration)
    if route.redirect is not None:
        redirect = route.redirect
        rpath = f"{path}.redirect"
        if not (
            redirect.uri
            or redirect.authority
            or redirect.scheme
            or redirect.port
            or redirect.derive_port
        ):
            found.append(
                _error(rpath, "redirect needs at least one of uri, authority, scheme or port")
            )
        if redirect.redirect_code is not None and not 300 <= redirect.redirect_code <= 399:
            found.append(_error(f"{rpath}.redirectCode", "must be a 3xx status code"))
        if redirect.scheme is not None and redirect.scheme not in ("http", "https"):
            found.append(_error(f"{rpath}.scheme", "must be http or https"))
        found += check_port(f"{rpath}.port", redirect.port)
        found += check_redirect_code(f"{rpath}.redirectCode", redirect.redirect_code)
    found += check_rewrite(f"{path}.rewrite", route, check_regex)
    if route.rewrite is not None and route.rewrite.uri and route.rewrite.uri_regex_rewrite:
        found.append(_error(f"{path}.rewrite", "uri and uriRegexRewrite are mutually exclusive"))
    if route.rewrite is not None and route.rewrite.uri_regex_rewrite is not None:
        found += check_regex(
            f"{path}.rewrite.uriRegexRewrite.match", route.rewrite.uri_regex_rewrite.match
        )
    if route.headers:
        found += check_header_operations(f"{path}.headers", route.headers)
    found += check_authority_set_once(path, route)
    if route.direct_response is not None and not 200 <= route.direct_response.status <= 599:
        found.append(_error(f"{path}.directResponse.status", "must be between 200 and 599"))
    if route.mirror is not None and route.mirrors:
        found.append(_error(path, "an HTTP route cannot have both mirror and mirrors"))
    if route.mirror is not None:
        found += check_destination(f"{path}.mirror", route.mirror)
    for j, mirror in enumerate(route.mirrors):
        found += check_destination(f"{path}.mirrors[{j}].destination", mirror.destination)
        if mirror.percentage is not None:
            found += check_mirror_percentage(
                f"{path}.mirrors[{j}].percentage.value", mirror.percentage.value
            )
    if route.mirror_percentage is not None:
        found += check_mirror_percentage(
            f"{path}.mirrorPercentage.value", route.mirror_percentage.value
        )
    if route.mirror_percent is not None:
        if not 0 <= route.mirror_percent <= 100:
            found.append(_error(f"{path}.mirrorPercent", "must be between 0 and 100"))
        found.append(
            Issue(
                Codes.INVALID_FIELD,
                f"{path}.mirrorPercent",
                "deprecated; use mirrorPercentage instead",
                level=Level.WARNING,
            )
        )
    if route.cors_policy is not None:
        for j, origin in enumerate(route.cors_policy.allow_origins):
            found += check_string_match(
                f"{path}.corsPolicy.allowOrigins[{j}]", origin, allow_empty_prefix=False
            )
        found += check_cors(f"{path}.corsPolicy", route.cors_policy, check_duration)
    return found


_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})


def _is_pseudo_or_claim(name: str) -> bool:
    """Match keys istiod allows beyond tokens: pseudo-headers and JWT claim routes."""
    return name in _PSEUDO_HEADERS or name.startswith("@request.auth.claims")


def _check_percentage(path: str, value: float) -> list[Issue]:
    if value != 0 and not 0.0001 <= value <= 100:
        return [_error(path, "percentage must be 0 or between 0.0001 and 100")]
    return []


def _validate_fault(path: str, route: HTTPRoute) -> list[Issue]:
    fault = route.fault
    assert fault is not None
    found: list[Issue] = []
    if fault.delay is None and fault.abort is None:
        found.append(_error(path, "fault needs an abort or a delay"))
    if fault.delay is not None:
        delay = fault.delay
        if delay.fixed_delay is None and delay.exponential_delay is None:
            found.append(_error(f"{path}.delay.fixedDelay", "fixedDelay is required"))
        found += check_duration(f"{path}.delay.fixedDelay", delay.fixed_delay)
        if delay.percentage is not None:
            found += _check_percentage(f"{path}.delay.percentage.value", delay.percentage.value)
    if fault.abort is not None:
        abort = fault.abort
        if abort.http_status is None and abort.grpc_status is None and abort.http2_error is None:
            found.append(_error(f"{path}.abort", "abort needs httpStatus or grpcStatus"))
        if abort.http_status is not None and not 200 <= abort.http_status <= 599:
            found.append(_error(f"{path}.abort.httpStatus", "must be between 200 and 599"))
        if abort.percentage is not None:
            found += _check_percentage(f"{path}.abort.percentage.value", abort.percentage.value)
    return found


# ---- DestinationRule ----------------------------------------------------------------------


def validate_destination_rule(dr: DestinationRule) -> list[Issue]:
    spec = dr.spec
    found = check_host("spec.host", spec.host)
    found += check_export_to("spec.exportTo", spec.export_to)
    if spec.traffic_policy is not None:
        found += _validate_traffic_policy("spec.trafficPolicy", spec.traffic_policy)
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets):
        path = f"spec.subsets[{i}]"
        if not subset.name:
            found.append(_error(f"{path}.name", "subset name is required"))
        elif not _DNS1123_LABEL.match(subset.name):
            found.append(_error(f"{path}.name", f"{subset.name!r} is not a valid subset name"))
        elif subset.name in names:
            found.append(_error(f"{path}.name", f"duplicate subset name {subset.name!r}"))
        names.add(subset.name)
        if subset.traffic_policy is not None:
            found += _validate_traffic_policy(f"{path}.trafficPolicy", subset.traffic_policy)
    return found


def _validate_traffic_policy(path: str, policy: TrafficPolicy) -> list[Issue]:
    found: list[Issue] = []
    if not policy.model_fields_set - {"port_level_settings"} and not policy.port_level_settings:
        found.append(_error(path, "traffic policy must not be empty"))
    found += _validate_policy_parts(path, policy)
    for i, port_policy in enumerate(policy.port_level_settings):
        ppath = f"{path}.portLevelSettings[{i}]"
        if port_policy.port is None or port_policy.port.number is None:
            found.append(_error(f"{ppath}.port", "port is required"))
        else:
            # istiod accepts any uint32 here; a port beyond 65535 never matches
            found += [
                Issue(i.code, i.path, i.reason + "; the settings never apply", level=Level.WARNING)
                for i in check_port(f"{ppath}.port.number", port_policy.port.number)
            ]
        if port_policy_is_empty(port_policy):
            found.append(_error(ppath, "port traffic policy must have at least one field"))
        found += _validate_policy_parts(ppath, port_policy)
    return found


def _check_client_tls(path: str, tls: Any) -> list[Issue]:
    """istiod's rules: skipping verification excludes what only verification uses, and a
    credentialName excludes inline certificates."""
    found: list[Issue] = []
    if tls.insecure_skip_verify and tls.mode in ("SIMPLE", "MUTUAL"):
        verifying = ["caCertificates"] if tls.ca_certificates else []
        if tls.subject_alt_names:
            verifying.append("subjectAltNames")
        if tls.mode == "SIMPLE" and tls.credential_name:
            verifying.append("credentialName")
        if verifying:
            found.append(
                _error(
                    f"{path}.insecureSkipVerify",
                    f"cannot be true with {', '.join(verifying)} (nothing would verify them)",
                )
            )
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        inline = [
            alias
            for field, alias in (
                ("client_certificate", "clientCertificate"),
                ("private_key", "privateKey"),
                ("ca_certificates", "caCertificates"),
                ("ca_crl", "caCrl"),
            )
            if getattr(tls, field)
        ]
        if inline:
            found.append(
                _error(
                    f"{path}.credentialName",
                    f"cannot be combined with {', '.join(inline)}: the credential provides them",
                )
            )
    return found


def _validate_policy_parts(path: str, policy: Any) -> list[Issue]:
    found: list[Issue] = []
    pool = policy.connection_pool
    if pool is not None:
        for section, fields in (
            ("tcp", ("max_connections",)),
            (
                "http",
                (
                    "http1_max_pending_requests",
                    "http2_max_requests",
                    "max_requests_per_connection",
                    "max_retries",
                    "max_concurrent_streams",
                ),
            ),
        ):
            settings = getattr(pool, section)
            if settings is None:
                continue
            for field in fields:
                value = getattr(settings, field)
                if value is not None and value < 0:
                    alias = type(settings).model_fields[field].alias or field
                    found.append(
                        _error(f"{path}.connectionPool.{section}.{alias}", "must not be negative")
                    )
        found += check_connection_pool(f"{path}.connectionPool", pool, check_duration)
        if pool.tcp is not None:
            found += check_duration(
                f"{path}.connectionPool.tcp.connectTimeout", pool.tcp.connect_timeout
            )
        if pool.http is not None:
            found += check_duration(
                f"{path}.connectionPool.http.idleTimeout", pool.http.idle_timeout
            )
            keepalive = pool.http.http2_keep_alive
            if keepalive is not None:
                kpath = f"{path}.connectionPool.http.http2KeepAlive"
                for field in ("interval", "timeout"):
                    value = getattr(keepalive, field)
                    if value is None:
                        found.append(_error(f"{kpath}.{field}", f"{field} is required"))
                    found += check_duration(f"{kpath}.{field}", value)
    outlier = policy.outlier_detection
    if outlier is not None:
        opath = f"{path}.outlierDetection"
        for field in (
            "consecutive_5xx_errors",
            "consecutive_gateway_errors",
            "consecutive_errors",
            "consecutive_local_origin_failures",
        ):
            value = getattr(outlier, field)
            if value is not None and value < 0:
                alias = type(outlier).model_fields[field].alias or field
                found.append(_error(f"{opath}.{alias}", "must not be negative"))
        for field, alias in (
            ("max_ejection_percent", "maxEjectionPercent"),
            ("min_health_percent", "minHealthPercent"),
        ):
            value = getattr(outlier, field)
            if value is not None and not 0 <= value <= 100:
                found.append(_error(f"{opath}.{alias}", "must be between 0 and 100"))
        found += check_duration(f"{opath}.interval", outlier.interval)
        found += check_duration(f"{opath}.baseEjectionTime", outlier.base_ejection_time)
        found += check_outlier_detection(opath, outlier)
    tls = policy.tls
    if tls is not None:
        found += _check_client_tls(f"{path}.tls", tls)
    if tls is not None and tls.mode == "MUTUAL" and not tls.credential_name:
        if not tls.client_certificate:
            found.append(_error(f"{path}.tls.clientCertificate", "MUTUAL needs clientCertificate"))
        if not tls.private_key:
            found.append(_error(f"{path}.tls.privateKey", "MUTUAL needs privateKey"))
    lb = policy.load_balancer
    if lb is not None and lb.simple is not None and lb.consistent_hash is not None:
        found.append(
            _error(f"{path}.loadBalancer", "simple and consistentHash are mutually exclusive")
        )
    if lb is not None and lb.warmup is not None:
        wpath = f"{path}.loadBalancer.warmup"
        if lb.warmup.duration is None:
            found.append(_error(f"{wpath}.duration", "duration is required"))
        found += check_duration(f"{wpath}.duration", lb.warmup.duration)
        if (lb.warmup.minimum_percent or 0) > 100 or (lb.warmup.minimum_percent or 0) < 0:
            found.append(_error(f"{wpath}.minimumPercent", "must be between 0 and 100"))
        if lb.warmup.aggression is not None and lb.warmup.aggression <= 0:
            found.append(_error(f"{wpath}.aggression", "must be greater than 0"))
    if lb is not None and lb.locality_lb_setting is not None and lb.zone_aware_lb_setting:
        found.append(
            _error(
                f"{path}.loadBalancer",
                "only one of localityLbSetting and zoneAwareLbSetting can be set",
            )
        )
    if lb is not None:
        found += check_load_balancer(f"{path}.loadBalancer", lb, outlier)
        found += check_duration(f"{path}.loadBalancer.warmupDurationSecs", lb.warmup_duration_secs)
    return found


register_validator("VirtualService", validate_virtual_service)
for _unsupported in UNSUPPORTED_KINDS:
    register_validator(_unsupported.kind, validate_unsupported)
register_validator("DestinationRule", validate_destination_rule)
