"""The route status for Service parents (GAMMA): one ``status.parents[]`` entry per Service a
HTTPRoute or GRPCRoute names in ``parentRefs``, with the ``Accepted`` and ``ResolvedRefs``
conditions and reasons the Gateway API specification defines.

Pure: a route and the services the snapshot knows in, the entries out. As istiod does
(``pilot/pkg/config/kube/gateway/conditions.go``): a Service parent is the mesh, which
always accepts a route (``Accepted``/``Accepted``); ``ResolvedRefs`` is False with
``InvalidKind`` for a backendRef that is not a core Service, and ``BackendNotFound`` for a
Service that does not exist. A mesh route needs no ReferenceGrant for a backend in another
namespace (istiod converts mesh routes with ``enforceRefGrant`` false), so it never gets
``RefNotPermitted``. Entries for Gateway parents are part "gwapi"'s; a writer merges
both lists (an entry is keyed by its ``parentRef`` and ``controllerName``).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.api.gatewayapi import (
    ISTIO_CONTROLLER,
    GRPCRoute,
    GRPCRouteRule,
    HTTPRoute,
    HTTPRouteRule,
    ParentReference,
)
from controlplane.store.gamma import is_service_backend, service_parents
from controlplane.store.registry import fqdn

# istiod reports mesh routes under its gateway controller's name (there is no GatewayClass
# to take one from).
CONTROLLER_NAME = ISTIO_CONTROLLER


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parent_ref(ref: ParentReference) -> dict[str, Any]:
    out: dict[str, Any] = {"group": ref.group or "", "kind": "Service", "name": ref.name}
    if ref.namespace:
        out["namespace"] = ref.namespace
    if ref.section_name:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def unresolved_backends(
    route: HTTPRoute | GRPCRoute, hostnames: Container[str]
) -> tuple[str, str] | None:
    """The first backendRef that does not resolve, as (reason, message), or None."""
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


def mesh_route_parents(
    route: HTTPRoute | GRPCRoute,
    hostnames: Container[str],
    previous: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """``status.parents[]`` entries for the route's Service parents. ``hostnames``: the
    FQDNs of the Services that exist; ``previous``: the route's status as written before
    (a condition whose status is unchanged keeps its ``lastTransitionTime``)."""
    stamp = now or _now()
    generation = route.metadata.generation
    unresolved = unresolved_backends(route, hostnames)
    before = _previous_conditions(previous)
    out = []
    for ref, _host in service_parents(route.spec.parent_refs, route.metadata.namespace):
        parent = _parent_ref(ref)
        accepted: dict[str, Any] = {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "Route was valid",
        }
        if unresolved is None:
            resolved: dict[str, Any] = {
                "type": "ResolvedRefs",
                "status": "True",
                "reason": "ResolvedRefs",
                "message": "All references resolved",
            }
        else:
            reason, message = unresolved
            resolved = {
                "type": "ResolvedRefs",
                "status": "False",
                "reason": reason,
                "message": message,
            }
        conditions = []
        for cond in (accepted, resolved):
            if generation is not None:
                cond["observedGeneration"] = generation
            old = before.get((_ref_key(parent), str(cond["type"])))
            same = old is not None and old.get("status") == cond["status"]
            cond["lastTransitionTime"] = (
                old.get("lastTransitionTime", stamp) if old is not None and same else stamp
            )
            conditions.append(cond)
        out.append(
            {"parentRef": parent, "controllerName": CONTROLLER_NAME, "conditions": conditions}
        )
    return out


def _ref_key(ref: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        ref.get("group") or "",
        ref.get("kind"),
        ref.get("namespace"),
        ref.get("name"),
        ref.get("sectionName"),
        ref.get("port"),
    )


def _previous_conditions(
    previous: Mapping[str, Any] | None,
) -> dict[tuple[tuple[Any, ...], str], Mapping[str, Any]]:
    out: dict[tuple[tuple[Any, ...], str], Mapping[str, Any]] = {}
    for entry in (previous or {}).get("parents", []):
        if entry.get("controllerName") != CONTROLLER_NAME:
            continue
        key = _ref_key(entry.get("parentRef", {}))
        for cond in entry.get("conditions", []):
            out[(key, str(cond.get("type")))] = cond
    return out


def route_status_body(
    route: HTTPRoute | GRPCRoute,
    hostnames: Container[str],
    previous: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The route's ``status``: entries of other controllers and of Gateway parents kept as
    they were, this controller's Service parents replaced."""
    ours = mesh_route_parents(route, hostnames, previous, now)
    mine = {_ref_key(e["parentRef"]) for e in ours}
    kept = [
        e
        for e in (previous or {}).get("parents", [])
        if not (
            e.get("controllerName") == CONTROLLER_NAME
            and (
                _ref_key(e.get("parentRef", {})) in mine
                or e.get("parentRef", {}).get("kind") == "Service"
            )
        )
    ]
    return {"parents": kept + ours}
