"""gateway.networking.k8s.io v1: the Kubernetes Gateway API kinds this control plane reads.

GatewayClass, Gateway, HTTPRoute, GRPCRoute (v1), ReferenceGrant (v1beta1), TLSRoute and
TCPRoute (v1, and the experimental channel's v1alpha2/v1alpha3), every field of the channel declared (a field the CRD does not define is an error, as the apiserver
prunes or refuses it). ``status`` is output: it is dropped on input, computed by the
conversion (``store/gatewayapi_convert.py``) and written by the leader.

The Gateway API ``Gateway`` shares its kind name with Istio's ``networking.istio.io``
Gateway, and the store keys resources by kind name: it is kept under ``KubernetesGateway``
(istiod's own name for it, ``gvk.KubernetesGateway``); ``GATEWAY_API_KINDS`` maps a store
kind back to the API's (group, kind, versions, plural).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field

from controlplane.api.base import IstioModel, ObjectMeta

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# Istio's class and controller; this control plane answers for both names.
ISTIO_CONTROLLER = "istio.io/gateway-controller"
CONTROLLER_NAME = "controlplane.dev/gateway-controller"
CONTROLLER_NAMES = frozenset({ISTIO_CONTROLLER, CONTROLLER_NAME})
ISTIO_CLASS = "istio"
KUBERNETES_GATEWAY = "KubernetesGateway"


class GatewayApiModel(IstioModel):
    """camelCase, frozen, unknown fields refused (the CRD schema is structural)."""

    model_config = ConfigDict(
        alias_generator=IstioModel.model_config.get("alias_generator"),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# ---- shared references -----------------------------------------------------------------------


class ParentReference(GatewayApiModel):
    group: str | None = None  # default gateway.networking.k8s.io
    kind: str | None = None  # default Gateway
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = None


class BackendRef(GatewayApiModel):
    group: str | None = None  # default "" (core)
    kind: str | None = None  # default Service
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None  # default 1 (in a route's backendRefs)


class SecretObjectReference(GatewayApiModel):
    group: str | None = None
    kind: str | None = None  # default Secret
    name: str
    namespace: str | None = None


class LocalObjectReference(GatewayApiModel):
    group: str
    kind: str
    name: str


# ---- GatewayClass -----------------------------------------------------------------------------


class ParametersReference(GatewayApiModel):
    group: str
    kind: str
    name: str
    namespace: str | None = None


class GatewayClassSpec(GatewayApiModel):
    controller_name: str
    parameters_ref: ParametersReference | None = None
    description: str | None = None


class GatewayClass(GatewayApiModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["GatewayClass"] = "GatewayClass"
    metadata: ObjectMeta
    spec: GatewayClassSpec


# ---- Gateway ----------------------------------------------------------------------------------


class LabelSelectorRequirement(GatewayApiModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(GatewayApiModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RouteNamespaces(GatewayApiModel):
    from_: Literal["All", "Same", "Selector"] = Field("Same", alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(GatewayApiModel):
    group: str | None = None  # default gateway.networking.k8s.io
    kind: str


class AllowedRoutes(GatewayApiModel):
    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class GatewayTLSConfig(GatewayApiModel):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    frontend_validation: dict[str, object] | None = None


class Listener(GatewayApiModel):
    name: str
    hostname: str | None = None
    port: int
    protocol: str  # HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed one
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewaySpecAddress(GatewayApiModel):
    type: str | None = None  # default IPAddress
    value: str = ""


class GatewayInfrastructure(GatewayApiModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    parameters_ref: LocalObjectReference | None = None


class KubernetesGatewaySpec(GatewayApiModel):
    gateway_class_name: str
    listeners: list[Listener] = Field(default_factory=list)
    addresses: list[GatewaySpecAddress] = Field(default_factory=list)
    infrastructure: GatewayInfrastructure | None = None
    allowed_listeners: dict[str, object] | None = None
    tls: dict[str, object] | None = None
    default_scope: str | None = None


class KubernetesGateway(GatewayApiModel):
    """A gateway.networking.k8s.io Gateway (store kind ``KubernetesGateway``)."""

    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["KubernetesGateway"] = "KubernetesGateway"
    metadata: ObjectMeta
    spec: KubernetesGatewaySpec


# ---- HTTPRoute --------------------------------------------------------------------------------


class HTTPPathMatch(GatewayApiModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(GatewayApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class HTTPQueryParamMatch(GatewayApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class HTTPRouteMatch(GatewayApiModel):
    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)
    query_params: list[HTTPQueryParamMatch] = Field(default_factory=list)
    method: str | None = None


class HTTPHeader(GatewayApiModel):
    name: str
    value: str


class HTTPHeaderFilter(GatewayApiModel):
    set: list[HTTPHeader] = Field(default_factory=list)
    add: list[HTTPHeader] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class HTTPPathModifier(GatewayApiModel):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(GatewayApiModel):
    scheme: str | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: int | None = None  # default 302


class HTTPURLRewriteFilter(GatewayApiModel):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(GatewayApiModel):
    numerator: int
    denominator: int = 100


class HTTPRequestMirrorFilter(GatewayApiModel):
    backend_ref: BackendRef
    percent: int | None = None
    fraction: Fraction | None = None


class HTTPRouteFilter(GatewayApiModel):
    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
        "ExternalAuth",
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    extension_ref: LocalObjectReference | None = None
    cors: dict[str, object] | None = None
    external_auth: dict[str, object] | None = None


class HTTPBackendRef(BackendRef):
    filters: list[HTTPRouteFilter] = Field(default_factory=list)


class HTTPRouteTimeouts(GatewayApiModel):
    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRetry(GatewayApiModel):
    codes: list[int] = Field(default_factory=list)
    attempts: int | None = None
    backoff: str | None = None


class SessionPersistence(GatewayApiModel):
    session_name: str | None = None
    absolute_timeout: str | None = None
    idle_timeout: str | None = None
    type: str | None = None
    cookie_config: dict[str, object] | None = None


class HTTPRouteRule(GatewayApiModel):
    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(GatewayApiModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=list)


class HTTPRoute(GatewayApiModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    metadata: ObjectMeta
    spec: HTTPRouteSpec


# ---- GRPCRoute --------------------------------------------------------------------------------


class GRPCMethodMatch(GatewayApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None


class GRPCHeaderMatch(GatewayApiModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class GRPCRouteMatch(GatewayApiModel):
    method: GRPCMethodMatch | None = None
    headers: list[GRPCHeaderMatch] = Field(default_factory=list)


class GRPCRouteFilter(GatewayApiModel):
    type: Literal[
        "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: LocalObjectReference | None = None


class GRPCBackendRef(BackendRef):
    filters: list[GRPCRouteFilter] = Field(default_factory=list)


class GRPCRouteRule(GatewayApiModel):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list)
    filters: list[GRPCRouteFilter] = Field(default_factory=list)
    backend_refs: list[GRPCBackendRef] = Field(default_factory=list)
    session_persistence: SessionPersistence | None = None


class GRPCRouteSpec(GatewayApiModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=list)


class GRPCRoute(GatewayApiModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["GRPCRoute"] = "GRPCRoute"
    metadata: ObjectMeta
    spec: GRPCRouteSpec


# ---- TLSRoute and TCPRoute (part "gwroutes") --------------------------------------------------
# In the pinned release (v1.6.0) both are v1 in the standard channel; the experimental channel
# also serves TLSRoute v1alpha2 and v1alpha3 and TCPRoute v1alpha2, with the same schema.


class L4RouteRule(GatewayApiModel):
    """A TLSRoute or TCPRoute rule: where the connection goes (no matches, no filters)."""

    name: str | None = None
    backend_refs: list[BackendRef] = Field(default_factory=list)


class TLSRouteSpec(GatewayApiModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[L4RouteRule] = Field(default_factory=list)
    use_default_gateways: str | None = None


class TLSRoute(GatewayApiModel):
    """A gateway.networking.k8s.io TLSRoute: TLS connections by SNI, not terminated."""

    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["TLSRoute"] = "TLSRoute"
    metadata: ObjectMeta
    spec: TLSRouteSpec


class TCPRouteSpec(GatewayApiModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    rules: list[L4RouteRule] = Field(default_factory=list)
    use_default_gateways: str | None = None


class TCPRoute(GatewayApiModel):
    """A gateway.networking.k8s.io TCPRoute: every connection of a TCP listener."""

    api_version: str = f"{GATEWAY_API_GROUP}/v1"
    kind: Literal["TCPRoute"] = "TCPRoute"
    metadata: ObjectMeta
    spec: TCPRouteSpec


# ---- ReferenceGrant ---------------------------------------------------------------------------


class ReferenceGrantFrom(GatewayApiModel):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(GatewayApiModel):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(GatewayApiModel):
    from_: list[ReferenceGrantFrom] = Field(default_factory=list, alias="from")
    to: list[ReferenceGrantTo] = Field(default_factory=list)


class ReferenceGrant(GatewayApiModel):
    api_version: str = f"{GATEWAY_API_GROUP}/v1beta1"
    kind: Literal["ReferenceGrant"] = "ReferenceGrant"
    metadata: ObjectMeta
    spec: ReferenceGrantSpec


# ---- the registry of these kinds ------------------------------------------------------------


@dataclass(frozen=True)
class GatewayApiKind:
    """One Gateway API kind: its store kind, the API's kind, versions served, plural."""

    store_kind: str
    kind: str
    versions: tuple[str, ...]
    plural: str
    model: type[GatewayApiModel]
    cluster_scoped: bool = False


GATEWAY_API_KINDS: tuple[GatewayApiKind, ...] = (
    GatewayApiKind("GatewayClass", "GatewayClass", ("v1", "v1beta1"), "gatewayclasses",
                   GatewayClass, cluster_scoped=True),
    GatewayApiKind(KUBERNETES_GATEWAY, "Gateway", ("v1", "v1beta1"), "gateways",
                   KubernetesGateway),
    GatewayApiKind("HTTPRoute", "HTTPRoute", ("v1", "v1beta1"), "httproutes", HTTPRoute),
    GatewayApiKind("GRPCRoute", "GRPCRoute", ("v1",), "grpcroutes", GRPCRoute),
    GatewayApiKind("ReferenceGrant", "ReferenceGrant", ("v1beta1", "v1"), "referencegrants",
                   ReferenceGrant),
    # part "gwroutes": the first version is the one watched (v1: standard and experimental).
    GatewayApiKind("TLSRoute", "TLSRoute", ("v1", "v1alpha3", "v1alpha2"), "tlsroutes", TLSRoute),
    GatewayApiKind("TCPRoute", "TCPRoute", ("v1", "v1alpha2"), "tcproutes", TCPRoute),
)  # fmt: skip
GATEWAY_API_STORE_KINDS = frozenset(k.store_kind for k in GATEWAY_API_KINDS)
_STORE_KIND = {k.kind: k.store_kind for k in GATEWAY_API_KINDS}
BY_STORE_KIND = {k.store_kind: k for k in GATEWAY_API_KINDS}


def store_kind(group: str, kind: str) -> str:
    """The kind a document of ``group`` is kept under in the store."""
    if group == GATEWAY_API_GROUP:
        return _STORE_KIND.get(kind, kind)
    return kind


def api_kind(store_kind_name: str) -> str:
    """The kind users write for a store kind (``KubernetesGateway`` -> ``Gateway``)."""
    found = BY_STORE_KIND.get(store_kind_name)
    return found.kind if found else store_kind_name


# ---- fields the conversion implements (the rest is reported as unsupported, CP0202) ----------


def _register_supported() -> None:
    from controlplane.api.support import SUPPORTED

    route_common = {
        "spec.parentRefs.**",
        "spec.hostnames",
        "spec.rules",
        "spec.rules.name",
        "spec.rules.matches.**",
        "spec.rules.filters",
        "spec.rules.filters.type",
        "spec.rules.filters.requestHeaderModifier.**",
        "spec.rules.filters.responseHeaderModifier.**",
        "spec.rules.filters.requestMirror.backendRef.**",
        "spec.rules.filters.requestMirror.percent",
        "spec.rules.filters.requestMirror.fraction.**",
        "spec.rules.backendRefs",
        "spec.rules.backendRefs.group",
        "spec.rules.backendRefs.kind",
        "spec.rules.backendRefs.name",
        "spec.rules.backendRefs.namespace",
        "spec.rules.backendRefs.port",
        "spec.rules.backendRefs.weight",
        "spec.rules.backendRefs.filters",
        "spec.rules.backendRefs.filters.type",
        "spec.rules.backendRefs.filters.requestHeaderModifier.**",
        "spec.rules.backendRefs.filters.responseHeaderModifier.**",
    }
    SUPPORTED["GatewayClass"] = frozenset({"spec.controllerName", "spec.description"})
    SUPPORTED[KUBERNETES_GATEWAY] = frozenset(
        {
            "spec.gatewayClassName",
            "spec.listeners",
            "spec.listeners.name",
            "spec.listeners.hostname",
            "spec.listeners.port",
            "spec.listeners.protocol",
            "spec.listeners.tls",
            "spec.listeners.tls.mode",
            "spec.listeners.tls.certificateRefs.**",
            "spec.listeners.allowedRoutes.**",
            "spec.addresses.**",
            # the automated deployment's labels and annotations (part "gwdeploy")
            "spec.infrastructure.labels",
            "spec.infrastructure.annotations",
        }
    )
    SUPPORTED["HTTPRoute"] = frozenset(
        route_common
        | {
            "spec.rules.filters.requestRedirect.**",
            "spec.rules.filters.urlRewrite.**",
            "spec.rules.timeouts.**",
            "spec.rules.retry.**",
        }
    )
    SUPPORTED["GRPCRoute"] = frozenset(route_common)
    SUPPORTED["ReferenceGrant"] = frozenset({"spec.**"})
    # part "gwroutes": spec.useDefaultGateways is not implemented (reported as unsupported).
    l4_route = {"spec.parentRefs.**", "spec.rules", "spec.rules.name", "spec.rules.backendRefs.**"}
    SUPPORTED["TLSRoute"] = frozenset(l4_route | {"spec.hostnames"})
    SUPPORTED["TCPRoute"] = frozenset(l4_route)


_register_supported()
