"""The parts of Gateway API HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1) that the
mesh (GAMMA: a route whose ``parentRefs`` name a Service) reads.

Part "gwapi" owns the full Gateway API models; these are the fields the mesh conversion
(``store/gamma.py``) and the route status for Service parents (``status/gamma.py``) use,
registered only when no fuller model for the kind is registered yet. Read as Kubernetes
objects (unknown fields ignored): the apiserver validates them against the upstream CRDs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import KubeModel, ObjectMeta

GATEWAY_API_GROUP = "gateway.networking.k8s.io"


class ParentReference(KubeModel):
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = None


class HTTPHeader(KubeModel):
    name: str
    value: str


class HTTPHeaderFilter(KubeModel):
    set: list[HTTPHeader] = Field(default_factory=list)
    add: list[HTTPHeader] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class HTTPPathModifier(KubeModel):
    type: str
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(KubeModel):
    scheme: str | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: int | None = None


class HTTPURLRewriteFilter(KubeModel):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class BackendObjectReference(KubeModel):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None


class HTTPRequestMirrorFilter(KubeModel):
    backend_ref: BackendObjectReference
    percent: int | None = None


class HTTPRouteFilter(KubeModel):
    type: str
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = Field(default=None, alias="urlRewrite")
    request_mirror: HTTPRequestMirrorFilter | None = None


class HTTPBackendRef(KubeModel):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: list[HTTPRouteFilter] = Field(default_factory=list)


class HTTPPathMatch(KubeModel):
    type: str = "PathPrefix"
    value: str = "/"


class ValueMatch(KubeModel):
    """HTTPHeaderMatch / HTTPQueryParamMatch / GRPCHeaderMatch."""

    type: str = "Exact"
    name: str
    value: str


class HTTPRouteMatch(KubeModel):
    path: HTTPPathMatch | None = None
    headers: list[ValueMatch] = Field(default_factory=list)
    query_params: list[ValueMatch] = Field(default_factory=list)
    method: str | None = None


class HTTPRouteTimeouts(KubeModel):
    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRule(KubeModel):
    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None


class HTTPRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=list)


class HTTPRoute(KubeModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    metadata: ObjectMeta
    spec: HTTPRouteSpec = Field(default_factory=HTTPRouteSpec)


class GRPCMethodMatch(KubeModel):
    type: str = "Exact"
    service: str | None = None
    method: str | None = None


class GRPCRouteMatch(KubeModel):
    method: GRPCMethodMatch | None = None
    headers: list[ValueMatch] = Field(default_factory=list)


class GRPCRouteRule(KubeModel):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)


class GRPCRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=list)


class GRPCRoute(KubeModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["GRPCRoute"] = "GRPCRoute"
    metadata: ObjectMeta
    spec: GRPCRouteSpec = Field(default_factory=GRPCRouteSpec)


def is_service_parent(ref: ParentReference) -> bool:
    """A GAMMA parent: core group (``""``, written or left out) and kind Service."""
    return (ref.group or "") in ("", "core") and ref.kind == "Service"
