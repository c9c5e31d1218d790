"""A small evaluator of Envoy RBAC configs, for unit tests of policy semantics.

It follows Envoy's documented matching rules for the parts the compiler emits. It is a test aid:
the behaviour of record is real Envoy's (tests/envoy/test_authz.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.type.matcher.v3 import string_pb2


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
        return permission.metadata.invert  # no dynamic metadata in these requests
    raise AssertionError(f"unexpected permission {kind}")


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
        return principal.metadata.invert  # no JWT: istio_authn metadata is absent
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
