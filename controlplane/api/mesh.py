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
from controlplane.api.issues import Codes, Issue, ResourceKey

MESH_CONFIG_KIND = "MeshConfig"
MESH_CONFIG_NAME = "istio"  # the ConfigMap's name, as istiod reads it
DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_TRUST_DOMAIN = "cluster.local"
MESH_CONFIG_KEY = ResourceKey(MESH_CONFIG_KIND, DEFAULT_ROOT_NAMESPACE, MESH_CONFIG_NAME)


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "ALLOW_ANY"
    tls: dict[str, Any] | None = None  # egress TLS origination settings: not used here


class ExtAuthzBody(IstioModel):
    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class EnvoyExtAuthzHttp(IstioModel):
    # istiod reads a provider without service or port and refuses it only when a CUSTOM
    # policy uses it: empty here, reported by the mesh config's validation (a warning).
    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    path_prefix: str = ""
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str = ""
    include_request_headers_in_check: list[str] = Field(default_factory=list)
    include_additional_headers_in_check: dict[str, str] = Field(default_factory=dict)
    include_request_body_in_check: ExtAuthzBody | None = None
    headers_to_upstream_on_allow: list[str] = Field(default_factory=list)
    headers_to_downstream_on_deny: list[str] = Field(default_factory=list)
    headers_to_downstream_on_allow: list[str] = Field(default_factory=list)
    include_headers_in_check: list[str] = Field(default_factory=list)  # deprecated form


class EnvoyExtAuthzGrpc(IstioModel):
    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str = ""
    include_request_body_in_check: ExtAuthzBody | None = None


# ---- telemetry providers (part "telemetry": compile/telemetry.py) -----------------------------


class HttpHeader(IstioModel):
    name: str = ""
    value: str | None = None
    env_name: str | None = None


class ZipkinTracingProvider(IstioModel):
    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    enable_64bit_trace_id: bool = Field(default=False, alias="enable64bitTraceId")
    path: str = ""
    trace_context_option: Literal["USE_B3", "USE_B3_WITH_W3C_PROPAGATION"] = "USE_B3"
    timeout: Duration | None = None
    headers: list[HttpHeader] = Field(default_factory=list)


class OtelHttpService(IstioModel):
    path: str = ""
    timeout: Duration | None = None
    headers: list[HttpHeader] = Field(default_factory=list)


class OtelGrpcService(IstioModel):
    timeout: Duration | None = None
    initial_metadata: list[HttpHeader] = Field(default_factory=list)


class OpenTelemetryTracingProvider(IstioModel):
    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    http: OtelHttpService | None = None
    grpc: OtelGrpcService | None = None
    resource_detectors: dict[str, Any] | None = None
    service_attribute_enrichment: Literal["ISTIO_CANONICAL", "OTEL_SEMANTIC_CONVENTIONS"] | None = (
        None
    )
    dynatrace_sampler: dict[str, Any] | None = None


class FileAccessLogFormat(IstioModel):
    text: str | None = None
    labels: dict[str, Any] | None = None


class EnvoyFileAccessLogProvider(IstioModel):
    path: str = ""
    log_format: FileAccessLogFormat | None = None
    omit_empty_values: bool = False


class PrometheusMetricsProvider(IstioModel):
    pass


class DefaultProviders(IstioModel):
    tracing: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    access_logging: list[str] = Field(default_factory=list)


class MeshExtensionProvider(IstioModel):
    """One of ``extensionProviders``: exactly one provider kind is set. Kinds not
    implemented (datadog, lightstep, ... and the gRPC/OpenTelemetry access log services) are
    kept as raw mappings; Telemetry reports them as unsupported where it names them."""

    name: str = ""
    envoy_ext_authz_http: EnvoyExtAuthzHttp | None = None
    envoy_ext_authz_grpc: EnvoyExtAuthzGrpc | None = None
    zipkin: ZipkinTracingProvider | None = None
    datadog: dict[str, Any] | None = None
    lightstep: dict[str, Any] | None = None
    opencensus: dict[str, Any] | None = None
    skywalking: dict[str, Any] | None = None
    opentelemetry: OpenTelemetryTracingProvider | None = None
    prometheus: PrometheusMetricsProvider | None = None
    stackdriver: dict[str, Any] | None = None
    envoy_file_access_log: EnvoyFileAccessLogProvider | None = None
    envoy_http_als: dict[str, Any] | None = None
    envoy_tcp_als: dict[str, Any] | None = None
    envoy_otel_als: dict[str, Any] | None = None
    sds: dict[str, Any] | None = None


class MeshConfigSpec(IstioModel):
    """The MeshConfig fields read here. Istio defines many more; a field not declared here
    is refused as unknown unless the reader (``mesh_config_document``) knows it as an Istio
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
    default_providers: DefaultProviders = Field(default_factory=DefaultProviders)
    # Istio's metrics merge at injection (the Pod's prometheus.io annotations pointed at the
    # proxy's :15020); unset means on, as in Istio (part promstats).
    enable_prometheus_merge: bool | None = None

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


# ---- reading Istio's MeshConfig YAML ---------------------------------------------------------

MESH_CONFIG_API_VERSION = "controlplane/v1"
MESH_FILE_NAME = "mesh.yaml"  # file mode: the mesh config, at the top of the config directory
MESH_CONFIGMAP_DATA_KEY = "mesh"  # the ``istio`` ConfigMap's key holding the MeshConfig YAML
# Cluster mode: the last accepted mesh config (JSON), kept on the istio ConfigMap by the
# status writer and served after a restart while the ConfigMap holds a refused one.
LAST_ACCEPTED_MESH = "controlplane.dev/last-accepted-mesh"

# MeshConfig fields Istio defines (istio/api mesh/v1alpha1/config.proto) that this control
# plane does not read: accepted and reported as unsupported (a warning), never as unknown.
UNUSED_MESH_FIELDS = frozenset(
    {
        "proxyListenPort",
        "proxyInboundListenPort",
        "proxyHttpPort",
        "connectTimeout",
        "hboneIdleTimeout",
        "protocolDetectionTimeout",
        "tcpKeepalive",
        "ingressClass",
        "ingressService",
        "ingressControllerMode",
        "ingressSelector",
        "enableEnvoyAccessLogService",
        "disableEnvoyListenerLog",
        "inboundTrafficPolicy",
        "configSources",
        "enableAutoMtls",
        "caCertificates",
        "defaultServiceExportTo",
        "defaultVirtualServiceExportTo",
        "defaultDestinationRuleExportTo",
        "localityLbSetting",
        "zoneAwareLbSetting",
        "dnsRefreshRate",
        "h2UpgradePolicy",
        "inboundClusterStatName",
        "outboundClusterStatName",
        "certificates",
        "serviceSettings",
        "serviceScopeConfigs",
        "verifyCertificateAtClient",
        "ca",
        "discoverySelectors",
        "pathNormalization",
        "defaultHttpRetryPolicy",
        "meshMtls",
        "tlsDefaults",
        "defaultTrafficPolicy",
        "serviceEntryVisibility",
        "thriftConfig",  # reserved in the proto, still written by older installs
    }
)


def mesh_config_document(mesh: Any, prefix: str = "") -> tuple[dict[str, Any], list[Issue]]:
    """Istio's MeshConfig YAML (``mesh.yaml``, or the ConfigMap's ``mesh`` key) as the
    document of the ``MeshConfig`` resource, and a warning for each Istio field set in it
    that this control plane does not use. ``prefix`` is where the YAML sits in what the user
    wrote (``data.mesh.`` in a ConfigMap), for the warnings' paths.

    Anything but a mapping is handed on unchanged as ``spec``, for the resource's
    validation to refuse with its path."""
    issues: list[Issue] = []
    spec: Any = {} if mesh is None else mesh
    if isinstance(mesh, dict):
        spec = {}
        for name, value in mesh.items():
            if name in UNUSED_MESH_FIELDS:
                issues.append(
                    Issue(
                        Codes.UNSUPPORTED_FIELD,
                        f"{prefix}{name}",
                        "an Istio MeshConfig field this control plane does not use; ignored",
                        MESH_CONFIG_KEY,
                    )
                )
            else:
                spec[name] = value
    document = {
        "apiVersion": MESH_CONFIG_API_VERSION,
        "kind": MESH_CONFIG_KIND,
        "metadata": {"name": MESH_CONFIG_NAME, "namespace": DEFAULT_ROOT_NAMESPACE},
        "spec": spec,
    }
    return document, issues
