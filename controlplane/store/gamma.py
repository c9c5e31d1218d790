"""GAMMA: Gateway API HTTPRoutes and GRPCRoutes whose parent is a Service route the mesh's
traffic to that Service, as a VirtualService does.

As istiod does (``pilot/pkg/config/kube/gateway/route_collections.go``), each route becomes
VirtualService-shaped routes bound to ``mesh`` with the Service's FQDN as their host; the
routes of every HTTPRoute (or GRPCRoute) of one namespace for one Service (and port) merge
into one VirtualService, oldest route first, sorted by the Gateway API's precedence (exact
path, then the longest path, then a method, then the most headers, then the most query
parameters). The result carries istiod's annotation for Gateway API semantics, which the
snapshot's ordering reads (``is_gamma``): a route in the client's own namespace comes before
every other route or VirtualService for the host ("consumer override"), and a route applies
to a client only from the Service's namespace (producer) or the client's own (consumer).

The models are part "gwapi"'s (``api/gatewayapi.py``); this module converts what a mesh
route needs with helpers of its own (written before the gateway conversion existed).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.api.base import ObjectMeta, parse_duration
from controlplane.api.gatewayapi import (
    BackendRef,
    GRPCBackendRef,
    GRPCRoute,
    GRPCRouteFilter,
    GRPCRouteMatch,
    HTTPBackendRef,
    HTTPHeaderFilter,
    HTTPRequestMirrorFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    ParentReference,
)
from controlplane.api.networking import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRouteDestination,
    Percent,
    PortSelector,
    StringMatch,
    VirtualService,
    VirtualServiceSpec,
)
from controlplane.api.networking import HTTPRoute as IstioHTTPRoute
from controlplane.store.registry import fqdn

# istiod's annotations on the VirtualServices it makes from Gateway API routes.
ROUTE_SEMANTICS = "internal.istio.io/route-semantics"
GATEWAY_SEMANTICS = "gateway"
PARENTS = "internal.istio.io/parents"
SOURCES = "controlplane/gamma-routes"  # the routes merged into this one, "Kind/ns/name,..."

_EPOCH = datetime.min


def is_gamma(vs: VirtualService) -> bool:
    """A VirtualService made here from Gateway API mesh routes."""
    return vs.metadata.annotations.get(ROUTE_SEMANTICS) == GATEWAY_SEMANTICS


def is_service_parent(ref: ParentReference) -> bool:
    """A GAMMA parent: the core group (``""``, written or left out) and kind Service."""
    return (ref.group or "") in ("", "core") and ref.kind == "Service"


def is_service_backend(ref: BackendRef) -> bool:
    """A backendRef to a Service: the core group and kind Service (the defaults)."""
    return (ref.group or "") in ("", "core") and (ref.kind or "Service") == "Service"


def service_parents(
    refs: Iterable[ParentReference], route_namespace: str
) -> list[tuple[ParentReference, str]]:
    """The Service parents of a route with the FQDN each names."""
    return [
        (ref, fqdn(ref.name, ref.namespace or route_namespace))
        for ref in refs
        if is_service_parent(ref)
    ]


@dataclass(frozen=True)
class _Converted:
    """One rule-match of a route as an Istio route, with what orders it."""

    route: IstioHTTPRoute
    rank: tuple[int, int, int, int, int]  # larger first
    created: datetime
    source: str  # "Kind/ns/name"


MeshRoute = HTTPRoute | GRPCRoute


def mesh_virtual_services(routes: Iterable[MeshRoute]) -> tuple[VirtualService, ...]:
    """The VirtualServices the mesh routes make, one per (route namespace, Service, port)."""
    merged: dict[tuple[str, str, int | None], list[_Converted]] = defaultdict(list)
    for route in routes:
        meta = route.metadata
        converted = list(_convert(route))
        if not converted:
            continue
        for ref, host in service_parents(route.spec.parent_refs, meta.namespace):
            merged[(meta.namespace, host, ref.port)].extend(converted)
    out = []
    for (namespace, host, port), items in sorted(
        merged.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)
    ):
        out.append(_virtual_service(namespace, host, port, items))
    return tuple(out)


def _virtual_service(
    namespace: str, host: str, port: int | None, items: list[_Converted]
) -> VirtualService:
    # Oldest route first, then the Gateway API's precedence (a stable sort keeps rule order
    # and age for ties); routes without a match last.
    ordered = sorted(items, key=lambda c: (c.created, c.source))
    ordered = sorted(ordered, key=lambda c: tuple(-r for r in c.rank))
    http = []
    for item in ordered:
        route = item.route
        if port is not None:
            matches = route.match or [HTTPMatchRequest()]
            route = route.model_copy(
                update={"match": [m.model_copy(update={"port": port}) for m in matches]}
            )
        http.append(route)
    sources = sorted({c.source for c in items})
    created = min(c.created for c in items)
    name = f"{host}~gamma" if port is None else f"{host}~{port}~gamma"
    return VirtualService(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            annotations={
                ROUTE_SEMANTICS: GATEWAY_SEMANTICS,
                PARENTS: f"Service/{host}",
                SOURCES: ",".join(sources),
            },
            creation_timestamp=created if created is not _EPOCH else None,
        ),
        spec=VirtualServiceSpec(hosts=[host], gateways=["mesh"], http=http),
    )


def _convert(route: MeshRoute) -> Iterable[_Converted]:
    meta = route.metadata
    source = f"{route.kind}/{meta.namespace}/{meta.name}"
    created = meta.creation_timestamp or _EPOCH
    if created is not _EPOCH and created.tzinfo is not None:
        created = created.replace(tzinfo=None)
    if isinstance(route, HTTPRoute):
        for index, rule in enumerate(route.spec.rules):
            base = _route_body(rule.filters, rule.backend_refs, meta.namespace)
            base = _retry_and_timeouts(base, rule)
            name = f"{meta.namespace}.{meta.name}.{index}"
            matches: list[HTTPRouteMatch | None] = [*rule.matches] or [None]
            for match in matches:
                istio_match, rank = _http_match(match)
                yield _Converted(
                    base.model_copy(
                        update={"name": name, "match": [istio_match] if istio_match else []}
                    ),
                    rank,
                    created,
                    source,
                )
    else:
        for index, grule in enumerate(route.spec.rules):
            base = _route_body(grule.filters, grule.backend_refs, meta.namespace)
            name = f"{meta.namespace}.{meta.name}.{index}"
            gmatches: list[GRPCRouteMatch | None] = [*grule.matches] or [None]
            for gmatch in gmatches:
                istio_match, rank = _grpc_match(gmatch)
                yield _Converted(
                    base.model_copy(
                        update={"name": name, "match": [istio_match] if istio_match else []}
                    ),
                    rank,
                    created,
                    source,
                )


def _retry_and_timeouts(base: IstioHTTPRoute, rule: HTTPRouteRule) -> IstioHTTPRoute:
    """As istiod: a retry stanza retries on connection errors and the listed codes (2
    attempts unless given); ``request`` is the route's timeout and ``backendRequest`` the
    per-try timeout (the route's timeout when there is no retry stanza)."""
    update: dict[str, Any] = {}
    retry: HTTPRetry | None = None
    if rule.retry is not None:
        attempts = 2 if rule.retry.attempts is None else rule.retry.attempts
        retry_on = ",".join(
            ["connect-failure", "refused-stream", "unavailable", "cancelled"]
            + [str(code) for code in rule.retry.codes]
        )
        retry = HTTPRetry(
            attempts=attempts,
            retry_on=retry_on if attempts else None,
            backoff=parse_duration(rule.retry.backoff) if rule.retry.backoff else None,
        )
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request and parse_duration(timeouts.request):
        update["timeout"] = parse_duration(timeouts.request)
    if timeouts is not None and timeouts.backend_request:
        backend = parse_duration(timeouts.backend_request)
        if backend and retry is not None:
            retry = retry.model_copy(update={"per_try_timeout": backend})
        elif backend:
            update["timeout"] = backend
    if retry is not None:
        update["retries"] = retry
    return base.model_copy(update=update) if update else base


# ---- matches ----------------------------------------------------------------------------

_URI_RANK = {"exact": 3, "prefix": 2, "regex": 1}


def _http_match(
    match: HTTPRouteMatch | None,
) -> tuple[HTTPMatchRequest | None, tuple[int, int, int, int, int]]:
    if match is None:
        # No match: the Gateway API's default, PathPrefix "/", sorted last.
        return None, (0, 0, 0, 0, 0)
    path = match.path
    uri: StringMatch | None = None
    kind, length = "prefix", 1
    if path is None or path.type == "PathPrefix":
        value = path.value if path is not None else "/"
        kind, length = "prefix", len(value)
        uri = _path_prefix(value)
    elif path.type == "Exact":
        kind, length = "exact", len(path.value)
        uri = StringMatch(exact=path.value)
    else:  # RegularExpression
        kind, length = "regex", len(path.value)
        uri = StringMatch(regex=path.value)
    headers = {h.name.lower(): _value(h.type, h.value) for h in match.headers}
    query = {q.name: _value(q.type, q.value) for q in match.query_params}
    method = StringMatch(exact=match.method) if match.method else None
    istio = HTTPMatchRequest(uri=uri, headers=headers, query_params=query, method=method)
    rank = (1, _URI_RANK[kind], length, int(method is not None), len(headers) * 1000 + len(query))
    return istio, rank


def _path_prefix(value: str) -> StringMatch:
    """PathPrefix matches whole path segments (``/foo`` matches ``/foo`` and ``/foo/bar``,
    not ``/foobar``), as istiod's path-separated prefix does."""
    trimmed = value.rstrip("/")
    if not trimmed:
        return StringMatch(prefix="/")
    return StringMatch(regex=f"{re.escape(trimmed)}(/.*)?")


def _value(kind: str, value: str) -> StringMatch:
    return StringMatch(regex=value) if kind == "RegularExpression" else StringMatch(exact=value)


def _grpc_match(
    match: GRPCRouteMatch | None,
) -> tuple[HTTPMatchRequest | None, tuple[int, int, int, int, int]]:
    if match is None:
        return None, (0, 0, 0, 0, 0)
    uri: StringMatch | None = None
    method = match.method
    if method is not None and (method.service or method.method):
        regex = method.type == "RegularExpression"
        service = method.service or ("[^/]+" if regex else "")
        name = method.method or ("[^/]+" if regex else "")
        if regex:
            uri = StringMatch(regex=f"/{service}/{name}")
        elif method.service and method.method:
            uri = StringMatch(exact=f"/{method.service}/{method.method}")
        elif method.service:
            uri = StringMatch(prefix=f"/{method.service}/")
        else:
            uri = StringMatch(regex=f"/[^/]+/{re.escape(name)}")
    headers = {h.name.lower(): _value(h.type, h.value) for h in match.headers}
    istio = HTTPMatchRequest(uri=uri, headers=headers)
    which = next((k for k in ("exact", "prefix", "regex") if uri and getattr(uri, k)), None)
    length = len(getattr(uri, which)) if uri is not None and which else 0
    rank = (1, _URI_RANK.get(which or "", 0), length, 0, len(headers) * 1000)
    return istio, rank


# ---- destinations and filters -------------------------------------------------------------


_Filter = HTTPRouteFilter | GRPCRouteFilter


def _route_body(
    filters: Sequence[_Filter],
    backends: Sequence[HTTPBackendRef | GRPCBackendRef],
    namespace: str,
) -> IstioHTTPRoute:
    request, response = _header_filters(filters)
    http_filters = [f for f in filters if isinstance(f, HTTPRouteFilter)]
    redirect = next((_redirect(f) for f in http_filters if f.request_redirect is not None), None)
    rewrite = next((_rewrite(f) for f in http_filters if f.url_rewrite is not None), None)
    mirrors = [
        _mirror(f.request_mirror, namespace) for f in filters if f.request_mirror is not None
    ]
    headers = Headers(request=request, response=response) if request or response else None
    if redirect is not None:
        return IstioHTTPRoute(redirect=redirect, headers=headers)
    # A backend that is not a Service is dropped (its route status says InvalidKind); a
    # Service that does not exist is kept, and its share of requests fails, as in istiod.
    destinations = [
        HTTPRouteDestination(
            destination=_destination(b, namespace),
            weight=1 if b.weight is None else b.weight,
            headers=_backend_headers(b),
        )
        for b in backends
        if is_service_backend(b)
    ]
    destinations = [d for d in destinations if d.weight]
    if not destinations:
        # No backend (or every weight 0): the specification answers 500.
        return IstioHTTPRoute(direct_response=HTTPDirectResponse(status=500), headers=headers)
    if len(destinations) == 1:
        destinations = [destinations[0].model_copy(update={"weight": None})]
    return IstioHTTPRoute(route=destinations, rewrite=rewrite, mirrors=mirrors, headers=headers)


def _mirror(spec: HTTPRequestMirrorFilter, namespace: str) -> HTTPMirrorPolicy:
    percent: float | None = None
    if spec.percent is not None:
        percent = float(spec.percent)
    elif spec.fraction is not None and spec.fraction.denominator:
        percent = 100.0 * spec.fraction.numerator / spec.fraction.denominator
    return HTTPMirrorPolicy(
        destination=_destination(spec.backend_ref, namespace),
        percentage=Percent(value=percent) if percent is not None else None,
    )


def _destination(ref: BackendRef, namespace: str) -> Destination:
    port = ref.port
    return Destination(
        host=fqdn(ref.name, ref.namespace or namespace),
        port=PortSelector(number=port) if port is not None else None,
    )


def _header_filters(
    filters: Sequence[_Filter],
) -> tuple[HeaderOperations | None, HeaderOperations | None]:
    request = response = None
    for f in filters:
        if f.request_header_modifier is not None:
            request = _operations(f.request_header_modifier)
        if f.response_header_modifier is not None:
            response = _operations(f.response_header_modifier)
    return request, response


def _operations(spec: HTTPHeaderFilter) -> HeaderOperations:
    return HeaderOperations(
        set={h.name: h.value for h in spec.set},
        add={h.name: h.value for h in spec.add},
        remove=list(spec.remove),
    )


def _backend_headers(backend: HTTPBackendRef | GRPCBackendRef) -> Headers | None:
    request, response = _header_filters(backend.filters)
    return Headers(request=request, response=response) if request or response else None


def _redirect(f: HTTPRouteFilter) -> HTTPRedirect:
    spec = f.request_redirect
    assert spec is not None
    uri = None
    if spec.path is not None and spec.path.type == "ReplaceFullPath":
        uri = spec.path.replace_full_path
    return HTTPRedirect(
        uri=uri,
        authority=spec.hostname,
        port=spec.port,
        scheme=spec.scheme,
        redirect_code=spec.status_code or 302,
    )


def _rewrite(f: HTTPRouteFilter) -> HTTPRewrite:
    spec = f.url_rewrite
    assert spec is not None
    uri = None
    if spec.path is not None:
        uri = spec.path.replace_full_path or spec.path.replace_prefix_match
    return HTTPRewrite(uri=uri, authority=spec.hostname)
