"""GAMMA on the real apiserver with the upstream Gateway API CRDs: the leader writes a mesh
route's status, one ``parents[]`` entry for its Service parent (Accepted, ResolvedRefs with
the specification's reason, observedGeneration, controllerName), and the apiserver checks
its shape against the upstream schema."""

from __future__ import annotations

import textwrap
from typing import Any

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess
from tests.kube.test_gatewayapi import by_type, gw_operator, status_of

__all__ = ["gw_operator"]  # the module fixture (upstream CRDs + operator), shared


def mesh_route(ns: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: reviews, namespace: {ns}}}
        spec: {{ports: [{{name: http, port: 9080}}]}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {{name: reviews-split, namespace: {ns}}}
        spec:
          parentRefs: [{{group: "", kind: Service, name: reviews, port: 9080}}]
          rules:
          - backendRefs:
            - {{name: reviews-v1, port: 9080, weight: 90}}
            - {{name: reviews-v2, port: 9080, weight: 10}}
        """
    )


def test_the_leader_writes_a_mesh_routes_service_parent_status(
    kube_cluster: LocalCluster, kube_namespace: str, gw_operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(mesh_route(ns))

    def service_parent() -> dict[str, Any] | None:
        found = (
            status_of(
                kube_cluster, "httproute.gateway.networking.k8s.io", "reviews-split", "-n", ns
            ).get("parents")
            or []
        )
        return next((p for p in found if p["parentRef"].get("kind") == "Service"), None)

    parent = gw_operator.wait_for(service_parent, what="the mesh route's Service parent")
    assert parent["parentRef"] == {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
    assert parent["controllerName"] == "istio.io/gateway-controller"
    conditions = by_type(parent["conditions"])
    assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == (
        "True",
        "Accepted",
    )
    resolved = conditions["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "spec.rules[0].backendRefs[0]" in resolved["message"]
    assert resolved["observedGeneration"] == 1

    for name in ("reviews-v1", "reviews-v2"):
        kube_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"name": "http", "port": 9080}]},
            }
        )

    def resolved_now() -> dict[str, Any] | None:
        found = service_parent()
        if found and by_type(found["conditions"])["ResolvedRefs"]["status"] == "True":
            return found
        return None

    gw_operator.wait_for(resolved_now, what="ResolvedRefs True once the backends exist")
