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

The store keeps these VirtualServices among the effective resources next to those part
"gwapi" converts for Gateways (``Store._convert_gateway_api``), and adds each route's
``parents[]`` entries for its Service parents to the Gateway API status the leader writes
(``convert_mesh_routes``, ``merge_route_parents``). The models, and the match, header and
rewrite helpers, are part gwapi's (``api/gatewayapi.py``, ``store/gatewayapi_rules.py``); the
backends, retries, timeouts and order are the mesh's, as istiod converts mesh routes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controlplane.api.base import ObjectMeta
from controlplane.api.gatewayapi import (
    ISTIO_CONTROLLER,
    BackendRef,
    GRPCRoute,
    GRPCRouteFilter,
    GRPCRouteRule,
    HTTPRequestMirrorFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteRule,
    ParentReference,
)
from controlplane.api.issues import ResourceKey, errors
from controlplane.api.networking import VirtualService
from controlplane.api.validation import validate
from controlplane.store.gatewayapi import condition
from controlplane.store.gatewayapi_inputs import (
    GATEWAY_SEMANTICS,
    ROUTE_SEMANTICS,
    uses_gateway_semantics,
)
from controlplane.store.gatewayapi_rules import (
    headers_of,
    rewrite_and_redirect,
    rule_matches,
)
from controlplane.store.registry import fqdn

# istiod's annotations on the VirtualServices it makes from Gateway API routes.
PARENTS = "internal.istio.io/parents"
SOURCES = "controlplane/gamma-routes"  # the routes merged into this one, "Kind/ns/name,..."

_EPOCH = datetime.min


def is_gamma(vs: VirtualService) -> bool:
    """A VirtualService made here from Gateway API mesh routes."""
    return uses_gateway_semantics(vs) and vs.metadata.annotations.get(PARENTS, "").startswith(
        "Service/"
    )


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
    """One rule-match of a route as an Istio ``http`` entry, with what orders it."""

    http: dict[str, Any]
    rank: tuple[int, int, int, int, int]  # larger first
    created: datetime
    source: str  # "Kind/ns/name"


MeshRoute = HTTPRoute | GRPCRoute


@dataclass
class MeshConversion:
    """The VirtualServices the mesh routes make, and each route's ``parents[]`` entries for
    its Service parents."""

    virtual_services: dict[ResourceKey, VirtualService] = field(default_factory=dict)
    status: dict[ResourceKey, list[dict[str, Any]]] = field(default_factory=dict)


def convert_mesh_routes(resources: Mapping[str, Mapping[ResourceKey, Any]]) -> MeshConversion:
    """Every HTTPRoute and GRPCRoute with a Service parent, converted (the store keeps the
    VirtualServices among the effective resources, next to part gwapi's)."""
    routes: list[MeshRoute] = [
        r
        for kind in ("HTTPRoute", "GRPCRoute")
        for r in resources.get(kind, {}).values()
        if isinstance(r, HTTPRoute | GRPCRoute)
        and any(is_service_parent(p) for p in r.spec.parent_refs)
    ]
    out = MeshConversion()
    if not routes:
        return out  # no mesh route: nothing to read (a Service batch stays linear)
    hostnames = {fqdn(k.name, k.namespace) for k in resources.get("Service", {})}
    valid: list[MeshRoute] = []
    invalid: dict[ResourceKey, str] = {}
    for route in routes:
        key = ResourceKey(route.kind, route.metadata.namespace, route.metadata.name)
        problem = _invalid(route)
        if problem is None:
            valid.append(route)
        else:
            invalid[key] = problem
    services = resources.get("Service", {})
    for vs in mesh_virtual_services(valid, services):
        key = ResourceKey("VirtualService", vs.metadata.namespace, vs.metadata.name)
        out.virtual_services[key] = vs
    for route in routes:
        key = ResourceKey(route.kind, route.metadata.namespace, route.metadata.name)
        parents = mesh_route_parents(route, hostnames, invalid.get(key), services)
        if parents:
            out.status[key] = parents
    return out


def _invalid(route: MeshRoute) -> str | None:
    """Why the route's rules make no valid VirtualService (a regex Envoy's RE2 refuses, a
    value out of range), checked by the VirtualService validation, or None. Such a route
    reaches no proxy; its status says why."""
    try:
        vs = _virtual_service(route.metadata.namespace, "check", None, list(_convert(route)))
        body = vs.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["metadata"] = {"name": "check", "namespace": route.metadata.namespace}
        for http in body["spec"].get("http", []):
            # An invalid backend's placeholder (no host) is the status's to report; the rule
            # keeps at least one Service (``_destinations``).
            if "route" in http:
                http["route"] = [d for d in http["route"] if d["destination"].get("host")]
        found = errors(validate(VirtualService.model_validate(body)))
    except (ValidationError, ValueError) as exc:
        return f"spec.rules: {exc}"
    if not found:
        return None
    return "; ".join(_route_path(vs, i.path) + f": {i.reason}" for i in found)


def _route_path(vs: VirtualService, path: str) -> str:
    """``spec.http[3].match[0].headers.x.regex`` -> ``spec.rules[1]: headers.x.regex``
    (the rule the converted route came from, named ``ns.name.<rule>``)."""
    found = re.match(r"spec\.http\[(\d+)\](?:\.match\[\d+\])?\.?(.*)", path)
    if found is None:
        return path
    index = int(found.group(1))
    name = vs.spec.http[index].name or "" if index < len(vs.spec.http) else ""
    rule = name.rsplit(".", 1)[-1]
    return f"spec.rules[{rule}]: {found.group(2)}" if rule.isdigit() else path


def merge_route_parents(
    status: Mapping[ResourceKey, Mapping[str, Any]],
    mesh: Mapping[ResourceKey, list[dict[str, Any]]],
) -> dict[ResourceKey, Mapping[str, Any]]:
    """Part gwapi's status with each route's Service-parent entries added to its
    ``parents[]`` (a route may have Gateway and Service parents at once)."""
    out: dict[ResourceKey, Mapping[str, Any]] = dict(status)
    for key, parents in mesh.items():
        found = out.get(key, {})
        out[key] = {**found, "parents": [*found.get("parents", []), *parents]}
    return out


# ---- status of Service parents -------------------------------------------------------------

# istiod reports mesh routes under its gateway controller's name (there is no GatewayClass
# to take one from).
MESH_CONTROLLER = ISTIO_CONTROLLER


def unresolved_backends(route: MeshRoute, hostnames: Container[str]) -> tuple[str, str] | None:
    """The first backendRef that does not resolve, as (reason, message), or None. A mesh
    route needs no ReferenceGrant for a backend in another namespace (istiod converts mesh
    routes with ``enforceRefGrant`` false), so it never gets ``RefNotPermitted``."""
    namespace = route.metadata.namespace
    rules: list[HTTPRouteRule | GRPCRouteRule] = [*route.spec.rules]
    for r, rule in enumerate(rules):
        for b, backend in enumerate(rule.backend_refs):
            path = f"spec.rules[{r}].backendRefs[{b}]"
            if not is_service_backend(backend):
                kind = f"{backend.group}/{backend.kind}" if backend.group else backend.kind
                return "InvalidKind", f"{path}: kind {kind} is not supported (use a Service)"
            ns = backend.namespace or namespace
            if fqdn(backend.name, ns) not in hostnames:
                return "BackendNotFound", f"{path}: Service {ns}/{backend.name} not found"
    return None


def parent_port(
    ref: ParentReference, route_namespace: str, services: Mapping[ResourceKey, Any]
) -> tuple[int | None, str | None]:
    """The port a Service parent attaches the route to (None: every port), or why it
    attaches to none. ``sectionName`` names a port of the Service (GEP-1426: a Service
    parent's sections are its ports): the route applies on that port only, and both must
    agree when ``port`` is given too. (istiod's sidecar conversion reads ``port`` only.)"""
    if not ref.section_name:
        return ref.port, None
    namespace = ref.namespace or route_namespace
    service = services.get(ResourceKey("Service", namespace, ref.name))
    if service is None:
        return None, f"Service {namespace}/{ref.name} not found: no port {ref.section_name!r}"
    for port in service.spec.ports:
        if port.name == ref.section_name:
            if ref.port is not None and ref.port != port.port:
                return None, (f"port {ref.port} is not the Service's port {port.name!r} "
                              f"({port.port})")  # fmt: skip
            return int(port.port), None
    return None, f"Service {namespace}/{ref.name} has no port named {ref.section_name!r}"


def mesh_route_parents(
    route: MeshRoute,
    hostnames: Container[str],
    invalid: str | None = None,
    services: Mapping[ResourceKey, Any] | None = None,
) -> list[dict[str, Any]]:
    """``status.parents[]`` entries for the route's Service parents (``hostnames``: the FQDNs
    of the Services that exist). As istiod (``conditions.go``): a Service parent is the
    mesh, which always accepts the route; ``ResolvedRefs`` is False with ``InvalidKind``
    for a backend that is not a core Service and ``BackendNotFound`` for a missing one.
    A route whose rules make no valid route (``invalid``: why) is not accepted
    (``UnsupportedValue``). Timestamps are the writer's, as for part gwapi's entries."""
    generation = route.metadata.generation
    unresolved = unresolved_backends(route, hostnames)
    resolved = (
        (True, "ResolvedRefs", "All references resolved")
        if unresolved is None
        else (False, *unresolved)
    )
    accepted = (
        (True, "Accepted", "Route was valid")
        if invalid is None
        else (False, "UnsupportedValue", invalid)
    )
    out = []
    for i, ref in enumerate(route.spec.parent_refs):
        if not is_service_parent(ref):
            continue
        problem = parent_port(ref, route.metadata.namespace, services or {})[1]
        attached = accepted
        if accepted[0] and problem is not None:
            where = f"spec.parentRefs[{i}].sectionName"
            attached = (False, "NoMatchingParent", f"{where}: {problem}")
        parent: dict[str, Any] = {"group": ref.group or "", "kind": "Service", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        if ref.port is not None:
            parent["port"] = ref.port
        out.append(
            {
                "parentRef": parent,
                "controllerName": MESH_CONTROLLER,
                "conditions": [
                    condition("Accepted", *attached, generation),
                    condition("ResolvedRefs", *resolved, generation),
                ],
            }
        )
    return out


def mesh_virtual_services(
    routes: Iterable[MeshRoute], services: Mapping[ResourceKey, Any] | None = None
) -> tuple[VirtualService, ...]:
    """The VirtualServices the mesh routes make, one per (route namespace, Service, port);
    a parent whose ``sectionName`` names no port of its Service attaches nowhere."""
    merged: dict[tuple[str, str, int | None], list[_Converted]] = defaultdict(list)
    for route in routes:
        meta = route.metadata
        parents = service_parents(route.spec.parent_refs, meta.namespace)
        if not parents:
            continue
        converted = list(_convert(route))
        for ref, host in parents:
            port, problem = parent_port(ref, meta.namespace, services or {})
            if problem is None:
                merged[(meta.namespace, host, port)].extend(converted)
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
    # and age for ties).
    ordered = sorted(items, key=lambda c: (c.created, c.source))
    ordered = sorted(ordered, key=lambda c: tuple(-r for r in c.rank))
    http = []
    for item in ordered:
        entry = item.http
        if port is not None:
            # A parentRef's port: the route applies on that port only (istiod's
            # augmentPortMatch).
            entry = {**entry, "match": [{**m, "port": port} for m in entry["match"]]}
        http.append(entry)
    sources = sorted({c.source for c in items})
    created = min(c.created for c in items)
    name = f"{host}~gamma" if port is None else f"{host}~{port}~gamma"
    meta = ObjectMeta(
        name=name,
        namespace=namespace,
        annotations={
            ROUTE_SEMANTICS: GATEWAY_SEMANTICS,
            PARENTS: f"Service/{host}",
            SOURCES: ",".join(sources),
        },
        creation_timestamp=created if created is not _EPOCH else None,
    )
    body = {"hosts": [host], "gateways": ["mesh"], "http": http}
    return VirtualService.model_validate({"metadata": meta, "spec": body})


def _convert(route: MeshRoute) -> Iterable[_Converted]:
    """Each rule-match as an Istio ``http`` entry, with part gwapi's match, header and
    rewrite helpers (store/gatewayapi.py) and the mesh's own backends: no ReferenceGrant is
    needed and a missing Service stays a destination, as in istiod (``enforceRefGrant`` is
    false for mesh routes)."""
    meta = route.metadata
    source = f"{route.kind}/{meta.namespace}/{meta.name}"
    created = meta.creation_timestamp or _EPOCH
    if created is not _EPOCH and created.tzinfo is not None:
        created = created.astimezone(UTC).replace(tzinfo=None)  # compared as UTC
    rules: list[HTTPRouteRule | GRPCRouteRule] = [*route.spec.rules]
    for index, rule in enumerate(rules):
        matches = rule_matches(route, index)
        filters: list[HTTPRouteFilter | GRPCRouteFilter] = [*rule.filters]
        http_filters = [f for f in filters if isinstance(f, HTTPRouteFilter)]
        destinations = _destinations(rule.backend_refs, meta.namespace)
        mirrors = [
            _mirror(f.request_mirror, meta.namespace)
            for f in filters
            if f.request_mirror is not None
        ]
        headers = headers_of(filters)
        for istio_match, matched_prefix in matches:
            http: dict[str, Any] = {
                "name": f"{meta.namespace}.{meta.name}.{index}",
                "match": [istio_match],
            }
            rewrite, redirect = rewrite_and_redirect(http_filters, matched_prefix)
            if headers:
                http["headers"] = headers
            if mirrors:
                http["mirrors"] = mirrors
            if redirect is not None:
                http["redirect"] = redirect
            elif not destinations:
                # No backend that is a Service with a weight: the specification's 500.
                http["directResponse"] = {"status": 500}
            else:
                http["route"] = destinations
                if rewrite:
                    http["rewrite"] = rewrite
                if isinstance(rule, HTTPRouteRule):
                    http.update(_retry_and_timeouts(rule))
            yield _Converted(http, _rank(istio_match), created, source)


def _destinations(backends: Sequence[Any], namespace: str) -> list[dict[str, Any]]:
    """A Service that does not exist stays, and its share of requests fails, as in istiod; a
    backend that is not a Service keeps its weight as a destination without a host (istiod's
    ``UnknownService``), so its share answers 500 (the route status says InvalidKind). None
    left that is a Service: none at all (the rule answers 500)."""
    out: list[dict[str, Any]] = []
    for ref in backends:
        weight = 1 if ref.weight is None else ref.weight
        if weight == 0:
            continue
        if not is_service_backend(ref):
            out.append({"destination": {}, "weight": weight})
            continue
        dest: dict[str, Any] = {"destination": _destination(ref, namespace), "weight": weight}
        headers = headers_of(getattr(ref, "filters", []))
        if headers:
            dest["headers"] = headers
        out.append(dest)
    if not any(d["destination"] for d in out):
        return []
    if len(out) == 1:
        out[0].pop("weight")
    return out


def _destination(ref: BackendRef, namespace: str) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": fqdn(ref.name, ref.namespace or namespace)}
    if ref.port is not None:
        dest["port"] = {"number": ref.port}
    return dest


def _mirror(spec: HTTPRequestMirrorFilter, namespace: str) -> dict[str, Any]:
    mirror: dict[str, Any] = {"destination": _destination(spec.backend_ref, namespace)}
    if spec.percent is not None:
        mirror["percentage"] = {"value": float(spec.percent)}
    elif spec.fraction is not None and spec.fraction.denominator:
        mirror["percentage"] = {
            "value": 100.0 * spec.fraction.numerator / spec.fraction.denominator
        }
    return mirror


def _retry_and_timeouts(rule: HTTPRouteRule) -> dict[str, Any]:
    """As istiod: a retry stanza retries on connection errors and the listed codes (2
    attempts unless given); ``request`` is the route's timeout and ``backendRequest`` the
    per-try timeout (the route's timeout when there is no retry stanza)."""
    out: dict[str, Any] = {}
    retry: dict[str, Any] | None = None
    if rule.retry is not None:
        attempts = 2 if rule.retry.attempts is None else rule.retry.attempts
        retry = {"attempts": attempts}
        if attempts:
            on = ["connect-failure", "refused-stream", "unavailable", "cancelled"]
            retry["retryOn"] = ",".join(on + [str(code) for code in rule.retry.codes])
        if rule.retry.backoff:
            retry["backoff"] = rule.retry.backoff
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request and not _is_zero(timeouts.request):
        out["timeout"] = timeouts.request
    if timeouts is not None and timeouts.backend_request:
        if _is_zero(timeouts.backend_request):
            pass
        elif retry is not None:
            retry["perTryTimeout"] = timeouts.backend_request
        else:
            out["timeout"] = timeouts.backend_request
    if retry is not None:
        out["retries"] = retry
    return out


def _is_zero(duration: str) -> bool:
    return duration.strip("0smhun.µ") == "" and not any(c in "123456789" for c in duration)


_URI_RANK = {"exact": 3, "prefix": 2, "regex": 1}


def _rank(istio_match: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """istiod's sortHTTPRoutes (larger first): Exact > Prefix > Regex, then the longer path,
    then a method match, the most header matches, the most query matches."""
    uri: dict[str, str] = istio_match.get("uri", {})
    kind, value = next(iter(uri.items()), ("", ""))
    return (
        _URI_RANK.get(kind, 0),
        len(value),
        int("method" in istio_match),
        len(istio_match.get("headers", {})),
        len(istio_match.get("queryParams", {})),
    )
