"""The extension providers a Telemetry names, as this control plane uses them: the file
access logs (Istio's default text line and JSON fields, the mesh-wide accessLogFile format)
and the tracing providers resolved to the cluster that carries their spans, as istiod's
``telemetryAccessLog``, ``FileAccessLogFromMeshConfig`` (pilot/pkg/model/
telemetry_logging.go) and ``configureFromProviderConfig`` (networking/core/tracing.go) do.
``compile/telemetry.py`` decides which apply; ``compile/telemetry_filters.py`` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.api.mesh import (
    EnvoyFileAccessLogProvider,
    MeshConfigSpec,
    MeshExtensionProvider,
    OpenTelemetryTracingProvider,
    PrometheusMetricsProvider,
    ZipkinTracingProvider,
)
from controlplane.compile.naming import outbound_cluster_name
from controlplane.store.registry import MeshService

# Istio's default text access log format (EnvoyTextLogFormat in telemetry_logging.go).
DEFAULT_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
# Istio's default JSON fields (EnvoyJSONLogFormatIstio): name -> command operator.
DEFAULT_JSON_FIELDS: Mapping[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}
DEV_STDOUT = "/dev/stdout"
# The providers every Istio mesh config has unless it redefines them by name (istiod's
# DefaultMeshConfig): "envoy" logs to stdout in the mesh's accessLogEncoding/Format.
BUILTIN_PROVIDERS: tuple[MeshExtensionProvider, ...] = (
    MeshExtensionProvider(name="prometheus", prometheus=PrometheusMetricsProvider()),
    MeshExtensionProvider(name="stackdriver", stackdriver={}),
    MeshExtensionProvider(
        name="envoy", envoy_file_access_log=EnvoyFileAccessLogProvider(path=DEV_STDOUT)
    ),
)
# istiod's PILOT_TRACE_SAMPLING default, used when defaultConfig.tracing.sampling is unset.
DEFAULT_SAMPLING = 1.0
ZIPKIN_DEFAULT_PATH = "/api/v2/spans"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"


@dataclass(frozen=True)
class FileLog:
    """One file access log: where, and in which format (``text``, or ``json`` fields as a
    canonical JSON object), with an optional CEL filter."""

    path: str
    text: str = ""
    json: str = ""  # a JSON object of field -> operator; empty: text format
    omit_empty_values: bool = False
    filter: str = ""  # a CEL expression; empty: every request is logged


@dataclass(frozen=True)
class TraceProvider:
    """A tracing provider resolved against the registry: its Envoy cluster and settings."""

    name: str
    kind: Literal["zipkin", "opentelemetry"]
    cluster: str
    hostname: str
    path: str = ""
    max_tag_length: int = 0
    trace_id_128bit: bool = True
    w3c: bool = False  # zipkin: USE_B3_WITH_W3C_PROPAGATION
    timeout: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    otel_http: bool = False  # OTLP over HTTP (``path``) instead of gRPC


@dataclass(frozen=True)
class CustomTag:
    name: str
    kind: Literal["literal", "environment", "header", "formatter"]
    value: str  # the literal value, variable name, header name or format string
    default: str = ""


@dataclass(frozen=True)
class TraceSettings:
    """The HCM's tracing: a provider (None: Envoy's own, i.e. none configured here), the
    random sampling percentage, tags, and the switches."""

    provider: TraceProvider | None
    sampling: float
    custom_tags: tuple[CustomTag, ...] = ()
    max_path_tag_length: int = 0
    spawn_upstream_span: bool = False
    use_request_id_for_trace_sampling: bool = True
    no_context_propagation: bool = False


# ---- providers --------------------------------------------------------------------------------


def find_provider(mesh: MeshConfigSpec, name: str) -> MeshExtensionProvider | None:
    """A provider by name, case-insensitive as istiod's ``fetchProvider``; the built-in
    ``envoy``/``prometheus``/``stackdriver`` unless the mesh config redefines them."""
    for provider in (*mesh.extension_providers, *BUILTIN_PROVIDERS):
        if provider.name.lower() == name.lower():
            return provider
    return None


def provider_service(
    services: Mapping[str, MeshService], service: str
) -> tuple[MeshService | None, str | None]:
    """istiod's ``LookupCluster``: ``[<namespace>/]<hostname>`` in the registry."""
    if not service:
        return None, "service must not be empty"
    namespace, _, hostname = service.rpartition("/")
    found = services.get(hostname)
    if found is None or (namespace and found.namespace != namespace):
        return None, f"could not find service {service} in the service registry"
    return found, None


def trace_provider(
    services: Mapping[str, MeshService], provider: MeshExtensionProvider
) -> tuple[TraceProvider | None, str | None]:
    """A zipkin or opentelemetry provider with its cluster, or why it cannot be used."""
    config: ZipkinTracingProvider | OpenTelemetryTracingProvider | None
    config = provider.zipkin or provider.opentelemetry
    if config is None:
        return None, f"extension provider {provider.name!r} is not a zipkin or opentelemetry " + (
            "provider (other tracing providers are not supported)"
        )
    service, error = provider_service(services, config.service)
    if service is None:
        return None, f"tracing provider {provider.name!r}: {error}"
    if service.port(config.port) is None:
        # No such cluster on the proxy: Envoy would refuse the whole listener update.
        return (
            None,
            f"tracing provider {provider.name!r}: {service.hostname} has no port {config.port}",
        )
    cluster = outbound_cluster_name(config.port, None, service.hostname)
    if isinstance(config, ZipkinTracingProvider):
        headers = tuple((h.name, h.value or "") for h in config.headers if h.value is not None)
        return (
            TraceProvider(
                provider.name,
                "zipkin",
                cluster,
                service.hostname,
                path=config.path or ZIPKIN_DEFAULT_PATH,
                max_tag_length=config.max_tag_length,
                trace_id_128bit=not config.enable_64bit_trace_id,
                w3c=config.trace_context_option == "USE_B3_WITH_W3C_PROPAGATION",
                timeout=config.timeout,
                headers=headers,
            ),
            None,
        )
    http = config.http
    return (
        TraceProvider(
            provider.name,
            "opentelemetry",
            cluster,
            service.hostname,
            path=http.path if http is not None else "",
            max_tag_length=config.max_tag_length,
            timeout=(
                http.timeout if http is not None else (config.grpc.timeout if config.grpc else None)
            ),
            headers=tuple(
                (h.name, h.value or "")
                for h in (
                    http.headers
                    if http is not None
                    else (config.grpc.initial_metadata if config.grpc else [])
                )
                if h.value is not None
            ),
            otel_http=http is not None,
        ),
        None,
    )


def file_log(mesh: MeshConfigSpec, provider: MeshExtensionProvider) -> FileLog | None:
    """An envoyFileAccessLog provider as a file log (istiod's ``telemetryAccessLog``); None
    for other kinds. The built-in ``envoy`` without a format takes the mesh's format."""
    config = provider.envoy_file_access_log
    if config is None:
        return None
    if provider.name == "envoy" and config.log_format is None and not config.omit_empty_values:
        return mesh_file_log(mesh, config.path)
    path = config.path or DEV_STDOUT
    fmt = config.log_format
    if fmt is not None and fmt.labels is not None:
        fields = fmt.labels or dict(DEFAULT_JSON_FIELDS)
        return FileLog(path, json=_canonical(fields), omit_empty_values=config.omit_empty_values)
    text = fmt.text if fmt is not None and fmt.text else ""
    return FileLog(path, text=_text_format(text), omit_empty_values=config.omit_empty_values)


def mesh_file_log(mesh: MeshConfigSpec, path: str) -> FileLog:
    """istiod's ``FileAccessLogFromMeshConfig``: ``accessLogEncoding`` TEXT (the format
    string, or Istio's default) or JSON (``accessLogFormat`` as a JSON object of fields, or
    Istio's default fields)."""
    if mesh.access_log_encoding == "JSON":
        fields: Any = dict(DEFAULT_JSON_FIELDS)
        if mesh.access_log_format:
            try:
                parsed = json.loads(mesh.access_log_format)
            except ValueError:
                parsed = None  # istiod logs the error and keeps its default fields
            if isinstance(parsed, dict):
                fields = parsed
        return FileLog(path, json=_canonical(fields))
    return FileLog(path, text=_text_format(mesh.access_log_format))


def _text_format(text: str) -> str:
    if not text:
        return DEFAULT_TEXT_FORMAT
    return text if text.endswith("\n") else text + "\n"


def _canonical(fields: Any) -> str:
    # Insertion order kept: Envoy writes the fields in the order given (sort_properties off).
    # default=str: YAML may have read a label value as a date; Envoy gets its text.
    return json.dumps(fields, separators=(",", ":"), default=str)
