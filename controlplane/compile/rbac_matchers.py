"""Matchers of Envoy's RBAC config for Istio's policy values: principals with the SPIFFE
scheme, namespaces, service accounts and trust domains inside SPIFFE ids, CIDR blocks,
headers, paths (with URI templates), ports, Envoy filter metadata, JWT metadata.

Istio's value forms: ``*`` matches any non-empty value, ``foo*`` a prefix, ``*foo`` a suffix,
anything else exactly (a ``*`` elsewhere is a literal character, as in istiod). Each matcher
gives the same Envoy matcher istiod's ``pilot/pkg/security/authz/model/generator.go`` and
``authz/matcher`` give, so that a value means what it means there.
"""

from __future__ import annotations

import ipaddress
import re

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from controlplane.compile.filters import JWT_AUTHN_FILTER
from controlplane.compile.protos import packed, uint32

# Where Envoy's jwt_authn filter puts a verified token's payload (compile/jwt.py): the
# filter's dynamic metadata, key ``payload``, as istiod's upstream-Envoy mode reads it. A
# request without a token (or a workload without a RequestAuthentication) has none, so these
# matchers never match it.
JWT_FILTER = JWT_AUTHN_FILTER
JWT_PAYLOAD = "payload"
_ANY = ".+"


class Untranslatable(Exception):
    """A value the translator cannot express exactly (validation should have caught it)."""


def regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def string_matcher(
    value: str, prefix: str = "", ignore_case: bool = False
) -> string_pb2.StringMatcher:
    """Istio's value matching: ``*`` any non-empty, ``foo*`` prefix, ``*foo`` suffix, else exact.

    ``prefix`` is prepended to exact and prefix forms (``spiffe://`` for principals).
    """
    if value == "*":
        matcher = regex(".+")
    elif value.startswith("*"):
        matcher = string_pb2.StringMatcher(suffix=value[1:])
    elif value.endswith("*"):
        matcher = string_pb2.StringMatcher(prefix=prefix + value[:-1])
    else:
        matcher = string_pb2.StringMatcher(exact=prefix + value)
    if ignore_case and not value == "*":
        matcher.ignore_case = True
    return matcher


def _authenticated(name: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=name))


def principal_matcher(value: str) -> rbac_pb2.Principal:
    """``cluster.local/ns/default/sa/order`` -> the peer certificate's URI SAN, ``spiffe://``
    added. Any string is a principal: ``*`` is any authenticated peer, ``*foo`` a suffix of a
    SPIFFE id, ``foo*`` a prefix."""
    if value == "*":
        return _authenticated(regex(".+"))
    if value.startswith("*"):
        return _authenticated(regex("spiffe://.*" + re.escape(value[1:])))
    if value.endswith("*"):
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://" + value[:-1]))
    return _authenticated(string_pb2.StringMatcher(exact="spiffe://" + value))


def namespace_matcher(value: str) -> rbac_pb2.Principal:
    """A namespace is matched inside the peer's SPIFFE id: ``.*/ns/<ns>/.*``, each ``*`` any
    run of characters."""
    pattern = ".*".join(re.escape(part) for part in value.split("*"))
    return _authenticated(regex(f".*/ns/{pattern}/.*"))


def service_account_matcher(value: str, namespace: str) -> rbac_pb2.Principal:
    """``sa`` (in the policy's namespace) or ``ns/sa``, in any trust domain; key/value
    segments may come between and after, as in istiod's SPIFFE id forms."""
    ns, found, sa = value.partition("/")
    if not found:
        ns, sa = namespace, value
    pattern = f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"
    return _authenticated(regex(pattern))


def trust_domain_matcher(value: str) -> rbac_pb2.Principal:
    """The trust domain of the peer's SPIFFE id: ``*`` any, ``td`` exactly, ``*td``/``td*``
    a suffix or prefix of it."""
    if value == "*":
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://"))
    if "*" not in value:
        return _authenticated(string_pb2.StringMatcher(prefix=f"spiffe://{value}/"))
    before, _, after = value.partition("*")
    return _authenticated(regex(f"spiffe://{re.escape(before)}[^/]*{re.escape(after)}/.*"))


def cidr_range(value: str) -> address_pb2.CidrRange:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise Untranslatable(f"{value!r} is not a CIDR block") from exc
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len=uint32(network.prefixlen)
    )


def direct_remote_ip_principal(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(direct_remote_ip=cidr_range(value))


def remote_ip_principal(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(remote_ip=cidr_range(value))


def _claim(claims: list[str], value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in [JWT_PAYLOAD, *claims]],
            value=value,
        )
    )


def request_principal_matcher(value: str) -> rbac_pb2.Principal:
    """``<iss>/<sub>`` as istiod reads it: split at the last ``/`` (an issuer is often a URL),
    the issuer and the subject each matched in the token's payload; ``*`` as a prefix or
    suffix applies to the side it is on, ``*`` alone to a token with both."""
    cut = value.rfind("/")
    found = cut >= 0
    iss, sub = (value[:cut], value[cut + 1 :]) if found else (value, "")
    match_iss: string_pb2.StringMatcher
    match_sub: string_pb2.StringMatcher
    if value == "*":
        match_iss, match_sub = regex(_ANY), regex(_ANY)
    elif value.startswith("*"):
        if found:
            match_iss = regex(_ANY) if iss == "*" else _suffix(iss[1:])
            match_sub = string_pb2.StringMatcher(exact=sub)
        else:
            match_iss, match_sub = regex(_ANY), _suffix(value[1:])
    elif value.endswith("*"):
        if found:
            match_iss = string_pb2.StringMatcher(exact=iss)
            match_sub = regex(_ANY) if sub == "*" else _prefix(sub[:-1])
        else:
            match_iss, match_sub = _prefix(value[:-1]), regex(_ANY)
    else:
        match_iss = string_pb2.StringMatcher(exact=iss)
        match_sub = string_pb2.StringMatcher(exact=sub)
    return rbac_pb2.Principal(
        and_ids=rbac_pb2.Principal.Set(
            ids=[
                _claim(["iss"], value_pb2.ValueMatcher(string_match=match_iss)),
                _claim(["sub"], value_pb2.ValueMatcher(string_match=match_sub)),
            ]
        )
    )


def _prefix(text: str) -> string_pb2.StringMatcher:
    # Envoy refuses an empty prefix; an empty one matches anything, even an empty string.
    return string_pb2.StringMatcher(prefix=text) if text else regex(".*")


def _suffix(text: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(suffix=text) if text else regex(".*")


def claim_principal(claims: list[str], value: str) -> rbac_pb2.Principal:
    """A payload claim (nested: ``[a, b]`` for ``request.auth.claims[a][b]``) equal to
    ``value`` (Istio's ``*``/prefix/suffix forms), or a list claim containing such a value."""
    one = value_matcher(value)
    either = value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)),
                one,
            ]
        )
    )
    return _claim(claims, either)


def authn_metadata_principal(path: list[str], value: str) -> rbac_pb2.Principal:
    """A ``request.auth.*`` attribute (``path``: the key, then claim names for
    ``request.auth.claims``) matched in the verified token's payload, as istiod does:
    principal -> ``iss`` and ``sub``, audiences -> ``aud``, presenter -> ``azp``."""
    head, rest = path[0], path[1:]
    if head == "request.auth.principal":
        return request_principal_matcher(value)
    if head == "request.auth.audiences":
        return claim_principal(["aud"], value)
    if head == "request.auth.presenter":
        return claim_principal(["azp"], value)
    if head == "request.auth.claims" and rest:
        return claim_principal(rest, value)
    raise Untranslatable(f"unknown request.auth attribute {head!r}")


def value_matcher(value: str) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=string_matcher(value))


def header_principal(name: str, value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(header=header(name, value))


def header(name: str, value: str, ignore_case: bool = False) -> route_components_pb2.HeaderMatcher:
    if value == "*":
        return route_components_pb2.HeaderMatcher(name=name, present_match=True)
    return route_components_pb2.HeaderMatcher(
        name=name, string_match=string_matcher(value, ignore_case=ignore_case)
    )


def host_permission(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=header(":authority", value, ignore_case=True))


def method_permission(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=header(":method", value))


MATCH_ONE_TEMPLATE = "{*}"
MATCH_ANY_TEMPLATE = "{**}"
URI_TEMPLATE_EXTENSION = "uri-template"


def has_path_template(value: str) -> bool:
    return MATCH_ONE_TEMPLATE in value or MATCH_ANY_TEMPLATE in value


def path_permission(value: str) -> rbac_pb2.Permission:
    """Exact, ``/prefix/*``, ``*/suffix`` or ``*`` on the path without its query; a path with
    ``{*}`` (one segment) or ``{**}`` (any segments) uses Envoy's URI-template matcher."""
    if has_path_template(value):
        template = value.replace(MATCH_ANY_TEMPLATE, "**").replace(MATCH_ONE_TEMPLATE, "*")
        config = uri_template_match_pb2.UriTemplateMatchConfig(path_template=template)
        return rbac_pb2.Permission(
            uri_template=extension_pb2.TypedExtensionConfig(
                name=URI_TEMPLATE_EXTENSION, typed_config=packed(config)
            )
        )
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_matcher(value)))


def port_permission(value: str) -> rbac_pb2.Permission:
    if not value.isdigit() or int(value) > 65535:
        raise Untranslatable(f"port {value!r} is not a number between 0 and 65535")
    return rbac_pb2.Permission(destination_port=int(value))


def envoy_filter_metadata_permission(key: str, values: list[str]) -> rbac_pb2.Permission:
    """``experimental.envoy.filters.<filter>[<key>]``: the dynamic metadata ``<key>`` that
    the Envoy filter ``envoy.filters.<filter>`` set; a value ``[v]`` matches a list holding
    ``v``, any other value the string itself; the values are alternatives."""
    name, bracket, rest = key.removeprefix("experimental.").partition("[")
    if not bracket or not rest.endswith("]") or not rest[:-1]:
        raise Untranslatable(f"{key!r} is not experimental.envoy.filters.<filter>[<key>]")
    matchers: list[value_pb2.ValueMatcher] = []
    for value in values:
        if value.startswith("[") and value.endswith("]"):
            one = value_pb2.ValueMatcher(string_match=string_matcher(value.strip("[]")))
            matchers.append(value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)))
        else:
            matchers.append(value_pb2.ValueMatcher(string_match=string_matcher(value)))
    combined = (
        matchers[0]
        if len(matchers) == 1
        else value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=matchers))
    )
    return rbac_pb2.Permission(
        metadata=metadata_pb2.MetadataMatcher(
            filter=name,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=rest[:-1])],
            value=combined,
        )
    )


def destination_ip_permission(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_ip=cidr_range(value))


def sni_permission(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(requested_server_name=string_matcher(value))
