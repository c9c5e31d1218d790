"""Gateway API route rules as VirtualService http routes (part "gwapi"): matches (a
PathPrefix segment by segment), filters, weighted backends, mirrors, timeouts, retries, and
the specification's precedence order. Pure; used by ``store/gatewayapi.py``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controlplane.api.gatewayapi import (
    BackendRef,
    GRPCRoute,
    GRPCRouteFilter,
    GRPCRouteMatch,
    GRPCRouteRule,
    HTTPHeaderFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
)
from controlplane.api.issues import ResourceKey
from controlplane.store.gatewayapi_inputs import CLUSTER_DOMAIN, World, created


@dataclass
class _Backends:
    # Every backend with a weight, an invalid one as istiod keeps it: a destination without
    # a host (the cluster ``UnknownService``, which does not exist), so its share of the
    # requests answers 500 (the route's gateway semantics) while the valid ones take theirs.
    destinations: list[dict[str, Any]]
    resolved: tuple[bool, str, str]
    any_invalid: bool
    valid: int = 0  # how many destinations resolve


def backend_host(
    world: World, route_key: ResourceKey, ref: BackendRef, where: str
) -> tuple[str | None, tuple[bool, str, str] | None]:
    """A backendRef's Service host, or why it does not resolve (the ResolvedRefs reason)."""
    if (ref.group or "") != "" or (ref.kind or "Service") != "Service":
        return None, (False, "InvalidKind", f"{where}: {ref.group or 'core'}/{ref.kind} is not "
                      "a kind this controller routes to")  # fmt: skip
    namespace = ref.namespace or route_key.namespace
    if namespace != route_key.namespace and not world.granted(
        route_key.kind, route_key.namespace, "", "Service", ref.name, namespace
    ):
        return None, (False, "RefNotPermitted", f"{where}: no ReferenceGrant in {namespace} "
                      f"allows {route_key.kind}s of {route_key.namespace} to use Service "
                      f"{ref.name}")  # fmt: skip
    if world.service(namespace, ref.name) is None:
        return None, (False, "BackendNotFound", f"{where}: Service {namespace}/{ref.name} "
                      "not found")  # fmt: skip
    if ref.port is None:
        return None, (False, "UnsupportedValue", f"{where}.port: a Service backend needs a port")
    return f"{ref.name}.{namespace}.{CLUSTER_DOMAIN}", None


def _backends(world: World, route_key: ResourceKey, refs: Iterable[Any], path: str) -> _Backends:
    destinations: list[dict[str, Any]] = []
    resolved: tuple[bool, str, str] = (True, "ResolvedRefs", "all references resolved")
    invalid = False
    valid = 0
    for j, ref in enumerate(refs):
        host, problem = backend_host(world, route_key, ref, f"{path}.backendRefs[{j}]")
        weight = 1 if ref.weight is None else ref.weight
        if problem is not None:
            invalid = True
            if resolved[0]:
                resolved = problem
            if weight:
                destinations.append({"destination": {}, "weight": weight})
            continue
        valid += 1 if weight else 0
        dest: dict[str, Any] = {
            "destination": {"host": host, "port": {"number": ref.port}},
            "weight": weight,
        }
        headers = headers_of(getattr(ref, "filters", []))
        if headers:
            dest["headers"] = headers
        destinations.append(dest)
    return _Backends(destinations, resolved, invalid, valid)


def _header_ops(modifier: HTTPHeaderFilter | None) -> dict[str, Any]:
    if modifier is None:
        return {}
    ops: dict[str, Any] = {}
    if modifier.set:
        ops["set"] = {h.name: h.value for h in modifier.set}
    if modifier.add:
        ops["add"] = {h.name: h.value for h in modifier.add}
    if modifier.remove:
        ops["remove"] = list(modifier.remove)
    return ops


def headers_of(filters: Iterable[Any]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for f in filters:
        if f.type == "RequestHeaderModifier":
            headers["request"] = _header_ops(f.request_header_modifier)
        elif f.type == "ResponseHeaderModifier":
            headers["response"] = _header_ops(f.response_header_modifier)
    return headers


def _string_match(kind: str, value: str) -> dict[str, str]:
    return {"regex": value} if kind == "RegularExpression" else {"exact": value}


def http_matches(match: HTTPRouteMatch) -> list[tuple[dict[str, Any], str | None]]:
    """One Gateway API match -> Istio matches (a PathPrefix is two: the path itself and the
    path followed by ``/``, segment by segment as the spec defines it), each with the prefix
    a ReplacePrefixMatch rewrite replaces."""
    base: dict[str, Any] = {}
    if match.headers:
        base["headers"] = {h.name.lower(): _string_match(h.type, h.value) for h in match.headers}
    if match.query_params:
        base["queryParams"] = {q.name: _string_match(q.type, q.value) for q in match.query_params}
    if match.method:
        base["method"] = {"exact": match.method}
    path = match.path.type if match.path else "PathPrefix"
    value = match.path.value if match.path else "/"
    if path == "Exact":
        return [({**base, "uri": {"exact": value}}, None)]
    if path == "RegularExpression":
        return [({**base, "uri": {"regex": value}}, None)]
    trimmed = value.rstrip("/")
    if not trimmed:
        return [({**base, "uri": {"prefix": "/"}}, "/")]
    return [
        ({**base, "uri": {"exact": trimmed}}, trimmed),
        ({**base, "uri": {"prefix": trimmed + "/"}}, trimmed + "/"),
    ]


def grpc_matches(match: GRPCRouteMatch) -> list[tuple[dict[str, Any], str | None]]:
    base: dict[str, Any] = {}
    if match.headers:
        base["headers"] = {h.name.lower(): _string_match(h.type, h.value) for h in match.headers}
    method = match.method
    if method is None or (not method.service and not method.method):
        return [({**base, "uri": {"prefix": "/"}}, None)]
    if method.type == "RegularExpression":
        service = method.service or "[^/]+"
        name = method.method or "[^/]+"
        return [({**base, "uri": {"regex": f"/{service}/{name}"}}, None)]
    if method.service and method.method:
        return [({**base, "uri": {"exact": f"/{method.service}/{method.method}"}}, None)]
    if method.service:
        return [({**base, "uri": {"prefix": f"/{method.service}/"}}, None)]
    return [({**base, "uri": {"regex": f"/[^/]+/{re.escape(method.method or '')}"}}, None)]


def rule_matches(
    route: HTTPRoute | GRPCRoute, index: int
) -> list[tuple[dict[str, Any], str | None]]:
    """Every Istio match of rule ``index`` (no match: the catch-all the specification gives),
    each with the prefix a ReplacePrefixMatch rewrite replaces. Shared by the Gateway
    conversion and the mesh's (store/gamma.py)."""
    matches: list[tuple[dict[str, Any], str | None]] = []
    if isinstance(route, HTTPRoute):
        for m in route.spec.rules[index].matches or [HTTPRouteMatch()]:
            matches += http_matches(m)
    else:
        for gm in route.spec.rules[index].matches or [GRPCRouteMatch()]:
            matches += grpc_matches(gm)
    return matches


def _precedence(istio_match: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """The spec's order (lower first): an exact path, then the longest prefix, a method,
    the most header matches, the most query matches."""
    uri = istio_match.get("uri", {})
    kind = 0 if "exact" in uri else 1 if "regex" in uri else 2
    length = len(next(iter(uri.values()), "")) if uri else 0
    return (
        kind,
        -length,
        0 if "method" in istio_match else 1,
        -len(istio_match.get("headers", {})),
        -len(istio_match.get("queryParams", {})),
    )


def rewrite_and_redirect(
    filters: Iterable[HTTPRouteFilter], matched_prefix: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(rewrite, redirect) of a rule's URLRewrite / RequestRedirect filters."""
    rewrite: dict[str, Any] | None = None
    redirect: dict[str, Any] | None = None
    for f in filters:
        if f.type == "URLRewrite" and f.url_rewrite is not None:
            rewrite = {}
            if f.url_rewrite.hostname:
                rewrite["authority"] = f.url_rewrite.hostname
            modifier = f.url_rewrite.path
            if modifier is not None and modifier.type == "ReplaceFullPath":
                full = modifier.replace_full_path or "/"
                rewrite["uriRegexRewrite"] = {"match": "/.*", "rewrite": full}
            elif modifier is not None:
                rewrite["uri"] = _prefix_replacement(
                    modifier.replace_prefix_match or "/", matched_prefix
                )
        elif f.type == "RequestRedirect" and f.request_redirect is not None:
            spec = f.request_redirect
            redirect = {"redirectCode": spec.status_code or 302}
            if spec.scheme:
                redirect["scheme"] = spec.scheme
            if spec.hostname:
                redirect["authority"] = spec.hostname
            if spec.port:
                redirect["port"] = spec.port
            elif spec.scheme:
                redirect["port"] = 443 if spec.scheme == "https" else 80
            if spec.path is not None and spec.path.type == "ReplaceFullPath":
                redirect["uri"] = spec.path.replace_full_path or "/"
            elif spec.path is not None:
                redirect["prefixRewrite"] = _prefix_replacement(
                    spec.path.replace_prefix_match or "/", matched_prefix
                )
    return rewrite, redirect


def _prefix_replacement(replacement: str, matched_prefix: str | None) -> str:
    """What replaces the matched prefix: for the ``/prefix/`` half of a PathPrefix match the
    separator stays (``/foo/x`` with ``/bar`` -> ``/bar/x``)."""
    if matched_prefix is not None and matched_prefix.endswith("/") and matched_prefix != "/":
        return replacement.rstrip("/") + "/"
    return replacement


@dataclass
class RouteEntry:
    order: tuple[Any, ...]
    http: dict[str, Any]
    gateways: list[str]


def rule_entries(
    world: World,
    route_key: ResourceKey,
    route: HTTPRoute | GRPCRoute,
    listener_names: list[str],
) -> list[RouteEntry]:
    entries: list[RouteEntry] = []
    stamp = created(route)
    for r, rule in enumerate(rules(route)):
        path = f"spec.rules[{r}]"
        backends = _backends(world, route_key, rule.backend_refs, path)
        matches = rule_matches(route, r)
        filters: list[HTTPRouteFilter | GRPCRouteFilter] = list(rule.filters)
        for istio_match, matched_prefix in matches:
            http: dict[str, Any] = {
                "name": f"{route_key.namespace}.{route_key.name}.{r}",
                "match": [{**istio_match, "gateways": list(listener_names)}],
            }
            rewrite, redirect = rewrite_and_redirect(
                [f for f in filters if isinstance(f, HTTPRouteFilter)], matched_prefix
            )
            headers = headers_of(filters)
            if headers:
                http["headers"] = headers
            mirrors = _mirrors(world, route_key, filters, path)
            if mirrors:
                http["mirrors"] = mirrors
            if any(f.type in UNSUPPORTED_FILTERS for f in filters):
                # A filter this controller cannot apply is never skipped: the rule answers
                # 500 (spec), and the route's Accepted says why (``unsupported_filter``).
                http = {"name": http["name"], "match": http["match"]}
                http["directResponse"] = {"status": 500}
            elif redirect is not None:
                http["redirect"] = redirect
            elif not backends.valid:
                # spec: a rule whose backends are all invalid (or none, or all of weight 0)
                # answers 500.
                http["directResponse"] = {"status": 500}
            else:
                http["route"] = backends.destinations
                if rewrite:
                    http["rewrite"] = rewrite
            timeouts = getattr(rule, "timeouts", None)
            if timeouts is not None and timeouts.request and "route" in http:
                http["timeout"] = timeouts.request
            if timeouts is not None and timeouts.backend_request and "route" in http:
                http["retries"] = {"attempts": 1, "perTryTimeout": timeouts.backend_request}
            retry = getattr(rule, "retry", None)
            if retry is not None and "route" in http:
                http["retries"] = {
                    "attempts": retry.attempts if retry.attempts is not None else 2,
                    **({"retryOn": ",".join(str(c) for c in retry.codes)} if retry.codes else {}),
                    **({"backoff": retry.backoff} if retry.backoff else {}),
                }
            order = (_precedence(istio_match), stamp, r)
            entries.append(RouteEntry(order, http, listener_names))
    return entries


# Filters of the specification this controller does not implement (extended or custom).
UNSUPPORTED_FILTERS = frozenset({"ExtensionRef", "CORS", "ExternalAuth"})


def unsupported_filter(route: HTTPRoute | GRPCRoute) -> tuple[bool, str, str] | None:
    for r, rule in enumerate(rules(route)):
        filters: list[HTTPRouteFilter | GRPCRouteFilter] = list(rule.filters)
        for k, f in enumerate(filters):
            if f.type in UNSUPPORTED_FILTERS:
                where = f"spec.rules[{r}].filters[{k}].type"
                return (False, "UnsupportedValue", f"{where}: {f.type} is not supported by "
                        "this controller; the rule answers 500")  # fmt: skip
    return None


def rules(route: HTTPRoute | GRPCRoute) -> list[HTTPRouteRule | GRPCRouteRule]:
    return list(route.spec.rules)


def route_resolved(
    world: World, route_key: ResourceKey, route: HTTPRoute | GRPCRoute
) -> tuple[bool, str, str]:
    """The route's ResolvedRefs: the first backendRef (or mirror) that does not resolve."""
    for r, rule in enumerate(rules(route)):
        path = f"spec.rules[{r}]"
        found = _backends(world, route_key, rule.backend_refs, path).resolved
        if not found[0]:
            return found
        filters: list[HTTPRouteFilter | GRPCRouteFilter] = list(rule.filters)
        for k, f in enumerate(filters):
            if f.type == "RequestMirror" and f.request_mirror is not None:
                where = f"{path}.filters[{k}].requestMirror.backendRef"
                problem = backend_host(world, route_key, f.request_mirror.backend_ref, where)[1]
                if problem is not None:
                    return problem
    return (True, "ResolvedRefs", "all references resolved")


def _mirrors(
    world: World, route_key: ResourceKey, filters: Iterable[Any], path: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in filters:
        if f.type != "RequestMirror" or f.request_mirror is None:
            continue
        host, problem = backend_host(
            world, route_key, f.request_mirror.backend_ref, f"{path}.filters.requestMirror"
        )
        if host is None or problem is not None:
            continue
        mirror: dict[str, Any] = {
            "destination": {"host": host, "port": {"number": f.request_mirror.backend_ref.port}}
        }
        if f.request_mirror.percent is not None:
            mirror["percentage"] = {"value": float(f.request_mirror.percent)}
        elif f.request_mirror.fraction is not None:
            frac = f.request_mirror.fraction
            mirror["percentage"] = {"value": 100.0 * frac.numerator / (frac.denominator or 100)}
        out.append(mirror)
    return out
