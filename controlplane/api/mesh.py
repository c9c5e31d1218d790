"""Mesh config: Istio's ``MeshConfig`` (the ``mesh`` key of the ``istio`` ConfigMap in the
root namespace, or a ``mesh.yaml`` file in file mode), the fields this control plane reads.

The mesh config travels through the store as a resource of the pseudo-kind ``MeshConfig``
with the key ``MESH_CONFIG_KEY``, so that it is validated, versioned and kept at its last good
version like any other resource. ``Snapshot.mesh`` returns it, or ``DEFAULT_MESH`` when none
was given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controlplane.api.base import Duration, IstioModel, ObjectMeta
from controlplane.api.issues import ResourceKey

MESH_CONFIG_KIND = "MeshConfig"
MESH_CONFIG_NAME = "istio"  # the ConfigMap's name, as istiod reads it
DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_TRUST_DOMAIN = "cluster.local"
MESH_CONFIG_KEY = ResourceKey(MESH_CONFIG_KIND, DEFAULT_ROOT_NAMESPACE, MESH_CONFIG_NAME)


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "ALLOW_ANY"


class ExtAuthzBody(IstioModel):
    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class EnvoyExtAuthzHttp(IstioModel):
    service: str
    port: int
    timeout: Duration | None = None
    path_prefix: str = ""
    fail_open: bool = False
    status_on_error: str = ""
    include_request_headers_in_check: list[str] = Field(default_factory=list)
    include_additional_headers_in_check: dict[str, str] = Field(default_factory=dict)
    include_request_body_in_check: ExtAuthzBody | None = None
    headers_to_upstream_on_allow: list[str] = Field(default_factory=list)
    headers_to_downstream_on_deny: list[str] = Field(default_factory=list)
    headers_to_downstream_on_allow: list[str] = Field(default_factory=list)
    include_headers_in_check: list[str] = Field(default_factory=list)  # deprecated form


class EnvoyExtAuthzGrpc(IstioModel):
    service: str
    port: int
    timeout: Duration | None = None
    fail_open: bool = False
    status_on_error: str = ""
    include_request_body_in_check: ExtAuthzBody | None = None


class MeshExtensionProvider(IstioModel):
    """One of ``extensionProviders``: exactly one provider kind is set. Kinds this model
    does not declare as typed fields (tracing and logging providers, used by Telemetry) are
    kept as raw mappings until they are implemented."""

    name: str
    envoy_ext_authz_http: EnvoyExtAuthzHttp | None = None
    envoy_ext_authz_grpc: EnvoyExtAuthzGrpc | None = None
    zipkin: dict[str, Any] | None = None
    datadog: dict[str, Any] | None = None
    lightstep: dict[str, Any] | None = None
    opencensus: dict[str, Any] | None = None
    skywalking: dict[str, Any] | None = None
    opentelemetry: dict[str, Any] | None = None
    prometheus: dict[str, Any] | None = None
    stackdriver: dict[str, Any] | None = None
    envoy_file_access_log: dict[str, Any] | None = None
    envoy_http_als: dict[str, Any] | None = None
    envoy_tcp_als: dict[str, Any] | None = None
    envoy_otel_als: dict[str, Any] | None = None
    sds: dict[str, Any] | None = None


class MeshConfigSpec(IstioModel):
    """The MeshConfig fields read here. Istio defines many more; a field not declared here
    is refused as unknown unless the parser (``parse_mesh_config``) knows it as an Istio
    field this project does not use, which it reports as a warning instead."""

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    trust_domain_aliases: list[str] = Field(default_factory=list)
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    extension_providers: list[MeshExtensionProvider] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy = Field(default_factory=OutboundTrafficPolicy)
    default_config: dict[str, Any] = Field(default_factory=dict)  # ProxyConfig, raw for now
    access_log_file: str = ""
    access_log_encoding: Literal["TEXT", "JSON"] = "TEXT"
    access_log_format: str = ""
    enable_tracing: bool = False
    default_providers: dict[str, Any] = Field(default_factory=dict)

    def provider(self, name: str) -> MeshExtensionProvider | None:
        for found in self.extension_providers:
            if found.name == name:
                return found
        return None


class MeshConfig(IstioModel):
    """The mesh config as a resource of the store (see the module docstring)."""

    api_version: str = "controlplane/v1"
    kind: Literal["MeshConfig"] = "MeshConfig"
    metadata: ObjectMeta
    spec: MeshConfigSpec = Field(default_factory=MeshConfigSpec)


DEFAULT_MESH = MeshConfig(
    metadata=ObjectMeta(name=MESH_CONFIG_NAME, namespace=DEFAULT_ROOT_NAMESPACE),
)
