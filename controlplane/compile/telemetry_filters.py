"""A side's telemetry (``compile/telemetry.py``) written into Envoy's config: file access logs
on every HTTP connection manager and TCP proxy of a listener, and the HCM's tracing (the
provider's typed config, random sampling, custom tags), as istiod's ``setHTTPAccessLog`` /
``setTCPAccessLog`` and ``configureTracing`` write them.

``with_telemetry`` is applied to a listener inside its memoized build (``compile/lds.py``),
with the side's telemetry in the build's key, so the listener builders stay unaware of it.
"""

from __future__ import annotations

import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import (
    base_pb2,
    grpc_service_pb2,
    http_service_pb2,
    http_uri_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from controlplane.compile.filters import HCM_FILTER, TCP_PROXY_FILTER
from controlplane.compile.protos import duration, packed
from controlplane.compile.telemetry import SideTelemetry
from controlplane.compile.telemetry_providers import (
    CustomTag,
    FileLog,
    TraceProvider,
    TraceSettings,
)

FILE_ACCESS_LOG = "envoy.access_loggers.file"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
ZIPKIN_TRACER = "envoy.tracers.zipkin"
OTEL_TRACER = "envoy.tracers.opentelemetry"
UUID_REQUEST_ID = "envoy.request_id.uuid"


def access_log(log: FileLog) -> accesslog_pb2.AccessLog:
    """One ``envoy.access_loggers.file`` entry."""
    fmt = substitution_format_string_pb2.SubstitutionFormatString(
        omit_empty_values=log.omit_empty_values
    )
    if log.json:
        fields = struct_pb2.Struct()
        fields.update(json.loads(log.json))
        fmt.json_format.CopyFrom(fields)
        fmt.json_format_options.sort_properties = False
    else:
        fmt.text_format_source.inline_string = log.text
    entry = accesslog_pb2.AccessLog(
        name=FILE_ACCESS_LOG,
        typed_config=packed(file_pb2.FileAccessLog(path=log.path, log_format=fmt)),
    )
    if log.filter:
        entry.filter.extension_filter.name = CEL_FILTER
        entry.filter.extension_filter.typed_config.CopyFrom(
            packed(cel_pb2.ExpressionFilter(expression=log.filter))
        )
    return entry


def _percent(value: float) -> percent_pb2.Percent:
    return percent_pb2.Percent(value=value)


def _custom_tag(tag: CustomTag) -> custom_tag_pb2.CustomTag:
    out = custom_tag_pb2.CustomTag(tag=tag.name)
    if tag.kind == "literal":
        out.literal.value = tag.value
    elif tag.kind == "environment":
        out.environment.name = tag.value
        out.environment.default_value = tag.default
    elif tag.kind == "header":
        out.request_header.name = tag.value
        out.request_header.default_value = tag.default
    else:
        out.value = tag.value
    return out


def _headers(provider: TraceProvider) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))
        for name, value in provider.headers
    ]


def tracer(provider: TraceProvider) -> http_tracer_pb2.Tracing.Http:
    """The HCM's tracing provider: Zipkin (HTTP JSON v2 to ``path`` on the provider's
    cluster) or OpenTelemetry (OTLP over gRPC, or HTTP when the provider says so)."""
    if provider.kind == "zipkin":
        config = zipkin_pb2.ZipkinConfig(
            collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
            trace_id_128bit=provider.trace_id_128bit,
            shared_span_context=wrappers_pb2.BoolValue(value=False),
        )
        if provider.w3c:
            config.trace_context_option = zipkin_pb2.ZipkinConfig.USE_B3_WITH_W3C_PROPAGATION
        config.collector_service.CopyFrom(
            http_service_pb2.HttpService(
                http_uri=http_uri_pb2.HttpUri(
                    uri=f"http://{provider.hostname}{provider.path}",
                    cluster=provider.cluster,
                    timeout=duration(provider.timeout if provider.timeout is not None else 5.0),
                ),
                request_headers_to_add=_headers(provider),
            )
        )
        return http_tracer_pb2.Tracing.Http(name=ZIPKIN_TRACER, typed_config=packed(config))
    otel = opentelemetry_pb2.OpenTelemetryConfig()
    if provider.otel_http:
        otel.http_service.CopyFrom(
            http_service_pb2.HttpService(
                http_uri=http_uri_pb2.HttpUri(
                    uri=f"{provider.hostname}{provider.path}",
                    cluster=provider.cluster,
                    timeout=duration(provider.timeout if provider.timeout is not None else 5.0),
                ),
                request_headers_to_add=_headers(provider),
            )
        )
    else:
        grpc = grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                cluster_name=provider.cluster, authority=provider.hostname
            ),
            initial_metadata=[base_pb2.HeaderValue(key=k, value=v) for k, v in provider.headers],
        )
        if provider.timeout is not None:
            grpc.timeout.CopyFrom(duration(provider.timeout))
        otel.grpc_service.CopyFrom(grpc)
    return http_tracer_pb2.Tracing.Http(name=OTEL_TRACER, typed_config=packed(otel))


def hcm_tracing(settings: TraceSettings) -> hcm_pb2.HttpConnectionManager.Tracing:
    """istiod's HCM tracing: client and overall sampling 100%, random sampling the
    percentage, custom tags sorted by name."""
    out = hcm_pb2.HttpConnectionManager.Tracing(
        client_sampling=_percent(100.0),
        overall_sampling=_percent(100.0),
        random_sampling=_percent(settings.sampling),
        custom_tags=[_custom_tag(t) for t in settings.custom_tags],
    )
    if settings.provider is not None:
        out.provider.CopyFrom(tracer(settings.provider))
    if settings.max_path_tag_length:
        out.max_path_tag_length.value = settings.max_path_tag_length
    if settings.spawn_upstream_span:
        out.spawn_upstream_span.value = True
    return out


def apply_to_hcm(hcm: hcm_pb2.HttpConnectionManager, side: SideTelemetry) -> None:
    hcm.access_log.extend(access_log(log) for log in side.access_logs)
    if side.tracing is None:
        return
    hcm.tracing.CopyFrom(hcm_tracing(side.tracing))
    if not side.tracing.use_request_id_for_trace_sampling:
        hcm.request_id_extension.typed_config.CopyFrom(
            packed(
                uuid_pb2.UuidRequestIdConfig(
                    use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(value=False)
                )
            )
        )


def with_telemetry(listener: listener_pb2.Listener, side: SideTelemetry) -> listener_pb2.Listener:
    """``listener`` with ``side``'s access logs on each HCM and TCP proxy and its tracing on
    each HCM (changed in place and returned; nothing to do for an empty side)."""
    if not side:
        return listener
    for chain in [
        *listener.filter_chains,
        *([listener.default_filter_chain] if listener.HasField("default_filter_chain") else []),
    ]:
        for network_filter in chain.filters:
            if network_filter.name == HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(hcm)
                apply_to_hcm(hcm, side)
                network_filter.typed_config.CopyFrom(packed(hcm))
            elif network_filter.name == TCP_PROXY_FILTER and side.access_logs:
                tcp = tcp_proxy_pb2.TcpProxy()
                network_filter.typed_config.Unpack(tcp)
                tcp.access_log.extend(access_log(log) for log in side.access_logs)
                network_filter.typed_config.CopyFrom(packed(tcp))
    return listener
