"""A small evaluator of Envoy RBAC configs, for unit tests of policy semantics.

It follows Envoy's documented matching rules for the parts the compiler emits. It is a test aid:
the behaviour of record is real Envoy's (tests/envoy/test_authz.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import string_pb2, value_pb2


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    host: str = "payment"
    headers: dict[str, str] = field(default_factory=dict)
    principal: str = ""  # the peer certificate's URI SAN; "" for plaintext
    source_ip: str = "127.0.7.11"
    remote_ip: str = "127.0.7.11"
    destination_ip: str = "127.0.7.10"
    destination_port: int = 9080
    sni: str = ""
    # Dynamic metadata by filter name (e.g. {"envoy.filters.a.b": {"c": "v"}}).
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        if name == ":method":
            return self.method
        if name == ":path":
            return self.path
        if name == ":authority":
            return self.host
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


def string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if matcher.ignore_case:
        value = value.lower()
    target = getattr(matcher, kind) if kind != "safe_regex" else matcher.safe_regex.regex
    if matcher.ignore_case and kind != "safe_regex":
        target = target.lower()
    if kind == "exact":
        return value == target
    if kind == "prefix":
        return value.startswith(target)
    if kind == "suffix":
        return value.endswith(target)
    if kind == "contains":
        return target in value
    if kind == "safe_regex":
        return re.fullmatch(target, value) is not None
    raise AssertionError(f"unexpected matcher {kind}")


def _header_matches(matcher: object, request: Request) -> bool:
    value = request.header(matcher.name)  # type: ignore[attr-defined]
    if matcher.HasField("present_match"):  # type: ignore[attr-defined]
        result = value is not None
    elif matcher.HasField("string_match"):  # type: ignore[attr-defined]
        result = value is not None and string_matches(matcher.string_match, value)  # type: ignore[attr-defined]
    else:
        raise AssertionError(f"unexpected header matcher {matcher}")
    return result != matcher.invert_match  # type: ignore[attr-defined]


def _in_cidr(cidr: object, address: str) -> bool:
    network = ipaddress.ip_network(
        f"{cidr.address_prefix}/{cidr.prefix_len.value}",  # type: ignore[attr-defined]
        strict=False,
    )
    return ipaddress.ip_address(address) in network


def permission_matches(permission: rbac_pb2.Permission, request: Request) -> bool:
    kind = permission.WhichOneof("rule")
    if kind == "any":
        return True
    if kind == "and_rules":
        return all(permission_matches(p, request) for p in permission.and_rules.rules)
    if kind == "or_rules":
        return any(permission_matches(p, request) for p in permission.or_rules.rules)
    if kind == "not_rule":
        return not permission_matches(permission.not_rule, request)
    if kind == "header":
        return _header_matches(permission.header, request)
    if kind == "url_path":
        return string_matches(permission.url_path.path, request.path.split("?", 1)[0])
    if kind == "destination_port":
        return request.destination_port == permission.destination_port
    if kind == "destination_ip":
        return _in_cidr(permission.destination_ip, request.destination_ip)
    if kind == "requested_server_name":
        return string_matches(permission.requested_server_name, request.sni)
    if kind == "metadata":
        return metadata_matches(permission.metadata, request)
    if kind == "uri_template":
        config = uri_template_match_pb2.UriTemplateMatchConfig()
        permission.uri_template.typed_config.Unpack(config)
        return uri_template_matches(config.path_template, request.path.split("?", 1)[0])
    raise AssertionError(f"unexpected permission {kind}")


# Envoy's URI-template literal characters (RFC 6570 unreserved, pct-encoded, some sub-delims).
_TEMPLATE_LITERAL = "a-zA-Z0-9\\-._~%!$&'()+,;:@="


def uri_template_matches(template: str, path: str) -> bool:
    """``*`` one path segment, ``**`` zero or more segments (Envoy's uri_template matcher)."""
    pattern = ""
    for token in re.split(r"(\*\*|\*)", template):
        if token == "**":
            pattern += f"[{_TEMPLATE_LITERAL}/]*"
        elif token == "*":
            pattern += f"[{_TEMPLATE_LITERAL}]+"
        else:
            pattern += re.escape(token)
    return re.fullmatch(pattern, path) is not None


def value_matches(matcher: value_pb2.ValueMatcher, value: Any) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "present_match":
        return value is not None
    if kind == "string_match":
        return isinstance(value, str) and string_matches(matcher.string_match, value)
    if kind == "list_match":
        return isinstance(value, list) and any(
            value_matches(matcher.list_match.one_of, v) for v in value
        )
    if kind == "or_match":
        return any(value_matches(m, value) for m in matcher.or_match.value_matchers)
    raise AssertionError(f"unexpected value matcher {kind}")


def metadata_matches(matcher: Any, request: Request) -> bool:
    value: Any = request.metadata.get(matcher.filter)
    for segment in matcher.path:
        value = value.get(segment.key) if isinstance(value, dict) else None
    result = value is not None and value_matches(matcher.value, value)
    return result != matcher.invert


def principal_matches(principal: rbac_pb2.Principal, request: Request) -> bool:
    kind = principal.WhichOneof("identifier")
    if kind == "any":
        return True
    if kind == "and_ids":
        return all(principal_matches(p, request) for p in principal.and_ids.ids)
    if kind == "or_ids":
        return any(principal_matches(p, request) for p in principal.or_ids.ids)
    if kind == "not_id":
        return not principal_matches(principal.not_id, request)
    if kind == "authenticated":
        if not request.principal:
            return False  # plaintext: no peer certificate
        return string_matches(principal.authenticated.principal_name, request.principal)
    if kind == "direct_remote_ip":
        return _in_cidr(principal.direct_remote_ip, request.source_ip)
    if kind == "remote_ip":
        return _in_cidr(principal.remote_ip, request.remote_ip)
    if kind == "header":
        return _header_matches(principal.header, request)
    if kind == "metadata":
        return metadata_matches(principal.metadata, request)  # no JWT: absent
    raise AssertionError(f"unexpected principal {kind}")


def policy_matches(policy: rbac_pb2.Policy, request: Request) -> bool:
    return any(permission_matches(p, request) for p in policy.permissions) and any(
        principal_matches(p, request) for p in policy.principals
    )


def allowed(configs: list[rbac_pb2.RBAC], request: Request) -> bool:
    """Run the RBAC filters in order, as Envoy's filter chain does."""
    for rbac in configs:
        matched = any(policy_matches(p, request) for p in rbac.policies.values())
        if rbac.action == rbac_pb2.RBAC.ALLOW and not matched:
            return False
        if rbac.action == rbac_pb2.RBAC.DENY and matched:
            return False
    return True


def rbac_of(http_filter: object) -> rbac_pb2.RBAC:
    config = http_rbac_pb2.RBAC()
    http_filter.typed_config.Unpack(config)  # type: ignore[attr-defined]
    return config.rules


# ---- whole filters: enforced rules, dry-run (shadow) rules, audit ------------------------------


@dataclass
class Outcome:
    """What Envoy's RBAC filters decide for one request: allowed or not, whether an AUDIT
    (LOG) rule marked it, and each shadow engine's verdict by its stat prefix."""

    allowed: bool = True
    audited: bool = False
    shadow: dict[str, str] = field(default_factory=dict)  # prefix -> "allowed" | "denied"
    ext_authz: bool = False  # sent to the CUSTOM policy's external authorizer


def _engine_allows(rules: rbac_pb2.RBAC, request: Request) -> tuple[bool, bool]:
    """(allowed, matched) for one RBAC engine."""
    matched = any(policy_matches(p, request) for p in rules.policies.values())
    if rules.action == rbac_pb2.RBAC.ALLOW:
        return matched, matched
    if rules.action == rbac_pb2.RBAC.DENY:
        return not matched, matched
    return True, matched  # LOG


FilterConfig = http_rbac_pb2.RBAC | network_rbac_pb2.RBAC


def evaluate(filters: list[FilterConfig], request: Request) -> Outcome:
    """Run the RBAC filters in order, as Envoy's filter chain does: the first enforced
    denial stops the request; shadow engines only record their verdict."""
    out = Outcome()
    for config in filters:
        if config.HasField("shadow_rules"):
            allows, _ = _engine_allows(config.shadow_rules, request)
            out.shadow[config.shadow_rules_stat_prefix] = "allowed" if allows else "denied"
        if config.HasField("rules"):
            allows, matched = _engine_allows(config.rules, request)
            if config.rules.action == rbac_pb2.RBAC.LOG and matched:
                out.audited = True
            if not allows:
                out.allowed = False
                return out
    return out


def http_config_of(http_filter: object) -> http_rbac_pb2.RBAC:
    config = http_rbac_pb2.RBAC()
    http_filter.typed_config.Unpack(config)  # type: ignore[attr-defined]
    return config


def network_config_of(network_filter: object) -> network_rbac_pb2.RBAC:
    config = network_rbac_pb2.RBAC()
    network_filter.typed_config.Unpack(config)  # type: ignore[attr-defined]
    return config
