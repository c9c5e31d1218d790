"""The status of a mesh route (GAMMA): one ``parents[]`` entry per Service parent, with
``Accepted`` and ``ResolvedRefs``, the specification's reasons, ``observedGeneration`` and
the controller's name; entries of other parents and controllers are kept."""

from __future__ import annotations

from typing import Any

import yaml

from controlplane.api import load
from controlplane.api.gatewayapi import HTTPRoute
from controlplane.status.gamma import CONTROLLER_NAME, mesh_route_parents, route_status_body

HOSTS = {"reviews.default.svc.cluster.local", "reviews-v1.default.svc.cluster.local"}


def route(backends: str, parents: str = '[{group: "", kind: Service, name: reviews}]') -> HTTPRoute:
    doc = yaml.safe_load(f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: default, generation: 4}}
spec:
  parentRefs: {parents}
  rules:
  - backendRefs: {backends}
""")
    resource, issues = load(doc)
    assert not issues and isinstance(resource, HTTPRoute)
    return resource


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    return {
        c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in entry["conditions"]
    }


def test_a_route_with_resolved_backends_is_accepted_on_its_service_parent() -> None:
    [entry] = mesh_route_parents(route("[{name: reviews-v1, port: 9080}]"), HOSTS, now="T")
    assert entry["parentRef"] == {"group": "", "kind": "Service", "name": "reviews"}
    assert entry["controllerName"] == CONTROLLER_NAME
    assert conditions(entry) == {
        "Accepted": ("True", "Accepted", 4),
        "ResolvedRefs": ("True", "ResolvedRefs", 4),
    }


def test_a_missing_backend_service_is_backend_not_found_with_its_field_path() -> None:
    [entry] = mesh_route_parents(route("[{name: gone, port: 9080}]"), HOSTS, now="T")
    resolved = next(c for c in entry["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert resolved["message"] == "spec.rules[0].backendRefs[0]: Service default/gone not found"


def test_a_backend_of_another_kind_is_invalid_kind() -> None:
    backends = "[{group: example.com, kind: Bucket, name: b}]"
    [entry] = mesh_route_parents(route(backends), HOSTS, now="T")
    assert conditions(entry)["ResolvedRefs"][:2] == ("False", "InvalidKind")


def test_gateway_parents_get_no_entry_here() -> None:
    parents = '[{name: ingress}, {group: "", kind: Service, name: reviews, port: 9080}]'
    entries = mesh_route_parents(route("[{name: reviews-v1}]", parents), HOSTS, now="T")
    assert [e["parentRef"] for e in entries] == [
        {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
    ]


def test_an_unchanged_condition_keeps_its_transition_time_and_other_entries_are_kept() -> None:
    r = route("[{name: reviews-v1, port: 9080}]")
    gateway_entry = {
        "parentRef": {"name": "ingress"},
        "controllerName": CONTROLLER_NAME,
        "conditions": [],
    }
    first = route_status_body(r, HOSTS, {"parents": [gateway_entry]}, now="T1")
    second = route_status_body(r, HOSTS, first, now="T2")
    assert second["parents"][0] == gateway_entry
    stamps = {c["lastTransitionTime"] for c in second["parents"][1]["conditions"]}
    assert stamps == {"T1"}
    gone = route_status_body(r, set(), second, now="T3")
    resolved = next(c for c in gone["parents"][1]["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["lastTransitionTime"]) == ("False", "T3")
    assert len(gone["parents"]) == 2


def test_a_backend_in_another_namespace_needs_no_reference_grant_on_a_mesh_route() -> None:
    # As istiod: ReferenceGrants are enforced for Gateway parents only.
    hosts = HOSTS | {"reviews-v9.shop.svc.cluster.local"}
    [entry] = mesh_route_parents(
        route("[{name: reviews-v9, namespace: shop, port: 9080}]"), hosts, now="T"
    )
    assert conditions(entry)["ResolvedRefs"][:2] == ("True", "ResolvedRefs")
