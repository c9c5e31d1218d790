"""The Gateway API kinds read as the apiserver keeps them (part "gwapi", issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.api import InvalidResource, ResourceKey, load
from controlplane.api.gatewayapi import KubernetesGateway
from controlplane.sources.files import read_file

GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "gw", "namespace": "infra"},
    "spec": {
        "gatewayClassName": "istio",
        "listeners": [
            {
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }
        ],
    },
    "status": {"conditions": [{"type": "Accepted", "status": "True"}]},
}


def test_a_gateway_api_gateway_is_kept_apart_from_istios_gateway() -> None:
    resource, issues = load(GATEWAY)
    assert isinstance(resource, KubernetesGateway)
    assert resource.kind == "KubernetesGateway"
    assert resource.spec.listeners[0].allowed_routes.namespaces.from_ == "All"  # type: ignore[union-attr]
    assert issues == []


def test_an_unknown_field_names_its_path() -> None:
    bad = {**GATEWAY, "spec": {**GATEWAY["spec"], "listners": []}}  # type: ignore[dict-item]
    with pytest.raises(InvalidResource) as caught:
        load(bad)
    assert caught.value.resource == ResourceKey("KubernetesGateway", "infra", "gw")
    assert any(i.path == "spec.listners" for i in caught.value.issues)


def test_file_mode_reads_every_kind(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(
        """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}, method: GET}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]
    backendRefs: [{name: svc, port: 80, weight: 3}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}}]
    backendRefs: [{name: grpc, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: grant, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"""
    )
    result = read_file(tmp_path / "gw.yaml", "gw.yaml")
    assert result.rejections == []
    keys = {s.resource.kind + " " + s.resource.metadata.name for s in result.submissions}
    assert keys == {
        "GatewayClass istio",
        "KubernetesGateway gw",
        "HTTPRoute r",
        "GRPCRoute g",
        "ReferenceGrant grant",
    }


def test_a_field_the_conversion_does_not_implement_is_reported() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "sessionPersistence": {"sessionName": "s"},
                    "backendRefs": [{"name": "svc", "port": 80}],
                }
            ],
        },
    }
    _, issues = load(route)
    assert [(i.code.id, i.path) for i in issues] == [("CP0202", "spec.rules[0].sessionPersistence")]
