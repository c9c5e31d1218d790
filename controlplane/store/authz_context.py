"""AuthorizationPolicy in the context of the mesh (part authz, issue 12): a policy whose
selector matches no workload where it applies, which istioctl analyze reports as IST0127
NoMatchingWorkloadsFound. A warning: the policy stays in effect and applies as soon as a
matching workload appears (the store checks again when pods or the mesh config change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.api.issues import Codes, Issue, ResourceKey
from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY
from controlplane.api.security import AuthorizationPolicy
from controlplane.store.registry import selects

# The kinds whose change can change what a policy selects.
SELECTION_KINDS = frozenset({"AuthorizationPolicy", "Pod", "MeshConfig"})
ADVICE_CODES = frozenset({Codes.AUTHZ_SELECTS_NOTHING.id})


def check_authorization_policy(
    policy: AuthorizationPolicy, pods: Iterable[Any], mesh: Any = None
) -> list[Issue]:
    """Warn when the policy's selector matches no pod of the namespaces it applies to (its
    own, or every namespace for the mesh's root namespace)."""
    spec = policy.spec
    selector = spec.selector
    if selector is None or not selector.match_labels:
        return []  # namespace-wide, or attached by targetRef (gateways, waypoints)
    namespace = policy.metadata.namespace
    root = (mesh or DEFAULT_MESH.spec).root_namespace
    for pod in pods:
        meta = pod.metadata
        if namespace not in (root, meta.namespace):
            continue
        if selects(selector.match_labels, meta.labels or {}):
            return []
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
    where = "any namespace" if namespace == root else f"namespace {namespace}"
    key = ResourceKey("AuthorizationPolicy", namespace, policy.metadata.name)
    return [
        Issue(
            Codes.AUTHZ_SELECTS_NOTHING,
            "spec.selector.matchLabels",
            f"no workload in {where} has the labels {labels}: the policy applies to nothing "
            "yet (istioctl analyze: IST0127 NoMatchingWorkloadsFound)",
        ).with_context(key, None)
    ]


def mesh_of(found: Any) -> Any:
    """The mesh config spec from the store's MeshConfig resource, or Istio's defaults."""
    return (found or DEFAULT_MESH).spec


__all__ = ["ADVICE_CODES", "MESH_CONFIG_KEY", "SELECTION_KINDS", "check_authorization_policy"]
