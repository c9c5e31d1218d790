"""Turning a YAML/JSON document into a typed resource, with precise errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from controlplane.api.credentials import Secret
from controlplane.api.gateway import Gateway
from controlplane.api.gatewayapi import (
    GATEWAY_API_GROUP,
    GATEWAY_API_KINDS,
    GatewayClass,
    GRPCRoute,
    HTTPRoute,
    KubernetesGateway,
    ReferenceGrant,
    store_kind,
)
from controlplane.api.issues import Codes, InvalidResource, Issue, ResourceKey
from controlplane.api.kube import EndpointSlice, Namespace, Pod, Service
from controlplane.api.mesh import MESH_CONFIG_KIND, MeshConfig
from controlplane.api.networking import DestinationRule, VirtualService
from controlplane.api.security import AuthorizationPolicy, PeerAuthentication
from controlplane.api.serviceentry import ServiceEntry, WorkloadEntry
from controlplane.api.sidecar import Sidecar
from controlplane.api.unsupported import UNSUPPORTED_KINDS, UnsupportedResource

# (API group, kind) -> model, and the versions of each group we serve.
MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("networking.istio.io", "VirtualService"): VirtualService,
    ("networking.istio.io", "DestinationRule"): DestinationRule,
    ("networking.istio.io", "ServiceEntry"): ServiceEntry,
    ("networking.istio.io", "WorkloadEntry"): WorkloadEntry,
    ("networking.istio.io", "Gateway"): Gateway,  # part "gateway" (issue 13)
    ("networking.istio.io", "Sidecar"): Sidecar,  # part "sidecar"
    ("security.istio.io", "PeerAuthentication"): PeerAuthentication,
    ("security.istio.io", "AuthorizationPolicy"): AuthorizationPolicy,
    ("", "Service"): Service,
    ("", "Pod"): Pod,
    ("", "Namespace"): Namespace,
    ("discovery.k8s.io", "EndpointSlice"): EndpointSlice,
    # The mesh config (api/mesh.py): never written as such by users (mesh.yaml or the istio
    # ConfigMap is), but this is the document it is kept as (file mode's state directory).
    ("controlplane", MESH_CONFIG_KIND): MeshConfig,
    ("", "Secret"): Secret,  # gateway credentials (credentialName): api/credentials.py
}
GROUP_VERSIONS: dict[str, frozenset[str]] = {
    "networking.istio.io": frozenset({"v1", "v1beta1", "v1alpha3"}),
    "security.istio.io": frozenset({"v1", "v1beta1"}),
    "": frozenset({"v1"}),
    "discovery.k8s.io": frozenset({"v1"}),
    "controlplane": frozenset({"v1"}),
}
# Istio kinds this control plane does not implement: read and reported (api/unsupported.py).
for _unsupported in UNSUPPORTED_KINDS:
    MODELS[(_unsupported.group, _unsupported.kind)] = UnsupportedResource
    GROUP_VERSIONS[_unsupported.group] = GROUP_VERSIONS.get(
        _unsupported.group, frozenset()
    ) | frozenset(_unsupported.versions)
# part "gwapi" (issue 16): the Kubernetes Gateway API (api/gatewayapi.py), kept under its
# store kind (the Gateway API Gateway is ``KubernetesGateway``).
for _gwapi in GATEWAY_API_KINDS:
    MODELS[(GATEWAY_API_GROUP, _gwapi.kind)] = _gwapi.model
GROUP_VERSIONS[GATEWAY_API_GROUP] = frozenset(v for k in GATEWAY_API_KINDS for v in k.versions)
ISTIO_GROUPS = frozenset(
    {
        "networking.istio.io",
        "security.istio.io",
        "telemetry.istio.io",
    }  # telemetry: part "telemetry"
    | {k.group for k in UNSUPPORTED_KINDS}
)
CLUSTER_SCOPED = frozenset({"Namespace", "GatewayClass"})

Resource = (
    VirtualService
    | DestinationRule
    | ServiceEntry
    | WorkloadEntry
    | Gateway
    | Sidecar
    | UnsupportedResource
    | PeerAuthentication
    | AuthorizationPolicy
    | Service
    | Pod
    | EndpointSlice
    | Namespace
    | MeshConfig
    | Secret
    | GatewayClass
    | KubernetesGateway
    | HTTPRoute
    | GRPCRoute
    | ReferenceGrant
)


def register(group: str, kind: str, model: type[BaseModel], versions: frozenset[str]) -> None:
    """Add a kind (used by modules that define more Istio kinds)."""
    MODELS[(group, kind)] = model
    GROUP_VERSIONS[group] = GROUP_VERSIONS.get(group, frozenset()) | versions


def key_of(resource: Any) -> ResourceKey:
    meta = resource.metadata
    return ResourceKey(resource.kind, meta.namespace, meta.name)


def is_istio_kind(kind: str) -> bool:
    """Kinds the store keeps a last good version of (Istio's, and the mesh config)."""
    return kind == MESH_CONFIG_KIND or any(
        group in ISTIO_GROUPS and k == kind for group, k in MODELS
    )


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('spec', 'http', 0, 'route')`` -> ``spec.http[0].route``."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad map key: the key is the path
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def document_key(doc: Any, default_namespace: str = "default") -> ResourceKey | None:
    """The key a document claims, read without validating it (for error messages)."""
    if not isinstance(doc, dict):
        return None
    found = doc.get("metadata")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = doc.get("kind")
    name = meta.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return None
    api_version = doc.get("apiVersion")
    if isinstance(api_version, str):
        kind = store_kind(split_api_version(api_version)[0], kind)
    namespace = "" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or default_namespace)
    return ResourceKey(kind, namespace, name)


def split_api_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        group, version = api_version.split("/", 1)
        return group, version
    return "", api_version


def parse_resource(doc: Any, default_namespace: str = "default") -> Resource:
    """Validate one document against its model.

    Raises InvalidResource (code CP0102/CP0103) naming the resource and each field path.
    Istio ``status`` is output, not input, and is not read.
    """
    key = document_key(doc, default_namespace)
    if not isinstance(doc, dict):
        raise InvalidResource(None, [Issue(Codes.SCHEMA_ERROR, "", "a resource must be a mapping")])
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise InvalidResource(
            key, [Issue(Codes.SCHEMA_ERROR, "", "apiVersion and kind are required", key)]
        )
    group, version = split_api_version(api_version)
    model = MODELS.get((group, kind))
    if model is None:
        raise InvalidResource(
            key,
            [
                Issue(
                    Codes.UNKNOWN_KIND,
                    "kind",
                    f"{api_version} {kind} is not a kind the mesh reads",
                    key,
                )
            ],
        )
    if version not in GROUP_VERSIONS.get(group, frozenset()):
        served = ", ".join(sorted(GROUP_VERSIONS.get(group, frozenset())))
        raise InvalidResource(
            key,
            [
                Issue(
                    Codes.SCHEMA_ERROR,
                    "apiVersion",
                    f"version {version} is not served (use {served})",
                    key,
                )
            ],
        )
    body = dict(doc)
    if group in ISTIO_GROUPS or group == GATEWAY_API_GROUP:
        body.pop("status", None)
    if group == GATEWAY_API_GROUP:
        body["kind"] = store_kind(group, kind)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and kind not in CLUSTER_SCOPED and not metadata.get("namespace"):
        body["metadata"] = {**metadata, "namespace": default_namespace}
    if group in ISTIO_GROUPS and "spec" not in body:
        body["spec"] = {}
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        issues = [
            Issue(
                Codes.UNKNOWN_FIELD if err["type"] == "extra_forbidden" else Codes.SCHEMA_ERROR,
                format_path(err["loc"]),
                _pydantic_reason(err),
                key,
            )
            for err in exc.errors(include_url=False)
        ]
        raise InvalidResource(key, issues) from None


def _pydantic_reason(err: Any) -> str:
    if err["type"] == "missing":
        return "is required"
    if err["type"] == "extra_forbidden":
        return f"unknown field {str(err['loc'][-1])!r}: {_kind_of(err['loc'])} does not define it"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


def _kind_of(loc: tuple[Any, ...] | list[Any]) -> str:
    named = [part for part in loc[:-1] if isinstance(part, str)]
    return f"{named[-1]!r}" if named else "the resource"
