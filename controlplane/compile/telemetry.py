"""Which access logs and which tracing a proxy gets, per side, as istiod decides it
(pilot/pkg/model/telemetry.go, telemetry_logging.go; pilot/pkg/networking/core/accesslog.go,
tracing.go).

Precedence: the root namespace's Telemetry without a selector (the mesh default), then the
proxy namespace's (each the oldest, if several), then the Telemetries of the proxy's namespace
that select it (by ``selector``; a Gateway API gateway by ``targetRefs`` to its Gateway), in
creation order; a later one overrides an earlier one. Access logging merges the providers per
mode (``match.mode``: CLIENT is the outbound side and gateways, SERVER the inbound side);
tracing takes the last provider, sampling, tags and switches set. Where no Telemetry (and no
``defaultProviders``) says anything, the mesh-wide settings apply: ``accessLogFile`` with
``accessLogEncoding``/``accessLogFormat``, and ``enableTracing`` with
``defaultConfig.tracing``.

The result is plain frozen data (``WorkloadTelemetry``), so that listeners can be memoized by
it: proxies whose telemetry agrees share listeners, and a Telemetry change rebuilds only the
listeners whose telemetry it changed. ``compile/telemetry_filters.py`` turns it into Envoy's
access logs and HCM tracing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controlplane.api.mesh import MeshConfigSpec, MeshExtensionProvider
from controlplane.api.telemetry import AccessLogging, ModeSelector, Telemetry, Tracing
from controlplane.compile.naming import outbound_cluster_name
from controlplane.compile.telemetry_providers import (
    CANONICAL_NAME_LABEL,
    CANONICAL_REVISION_LABEL,
    DEFAULT_SAMPLING,
    GATEWAY_NAME_LABEL,
    ZIPKIN_DEFAULT_PATH,
    CustomTag,
    FileLog,
    TraceProvider,
    TraceSettings,
    file_log,
    find_provider,
    mesh_file_log,
    trace_provider,
)
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import created

Mode = Literal["CLIENT", "SERVER"]


@dataclass(frozen=True)
class SideTelemetry:
    """What one side of a proxy (its outbound/gateway or its inbound listeners) logs and
    traces."""

    access_logs: tuple[FileLog, ...] = ()
    tracing: TraceSettings | None = None

    def __bool__(self) -> bool:
        return bool(self.access_logs) or self.tracing is not None


@dataclass(frozen=True)
class WorkloadTelemetry:
    client: SideTelemetry = field(default_factory=SideTelemetry)
    server: SideTelemetry = field(default_factory=SideTelemetry)

    def side(self, mode: Mode) -> SideTelemetry:
        return self.client if mode == "CLIENT" else self.server


NO_TELEMETRY = WorkloadTelemetry()


# ---- which Telemetries apply ------------------------------------------------------------------


def applicable_telemetries(
    telemetries: Iterable[Telemetry],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str,
) -> list[Telemetry]:
    """The Telemetries that apply to a workload, weakest first (istiod's
    ``applicableTelemetries``)."""
    by_namespace: dict[str, list[Telemetry]] = {}
    for telemetry in sorted(telemetries, key=created):
        by_namespace.setdefault(telemetry.metadata.namespace, []).append(telemetry)
    out: list[Telemetry] = []
    root = _namespace_wide(by_namespace.get(root_namespace, []))
    if root is not None:
        out.append(root)
    if namespace != root_namespace:
        own = _namespace_wide(by_namespace.get(namespace, []))
        if own is not None:
            out.append(own)
    for telemetry in by_namespace.get(namespace, []):
        if not telemetry.spec.namespace_wide and _attaches(telemetry, namespace, labels):
            out.append(telemetry)
    return out


def _namespace_wide(telemetries: Sequence[Telemetry]) -> Telemetry | None:
    return next((t for t in telemetries if t.spec.namespace_wide), None)


def _attaches(telemetry: Telemetry, namespace: str, labels: Mapping[str, str]) -> bool:
    """istiod's ``ShouldAttachPolicy`` for sidecars and gateways: a sidecar by selector (a
    Telemetry with targetRefs never applies to one); a Gateway API gateway by a targetRef to
    its Gateway, or by selector."""
    spec = telemetry.spec
    refs = spec.all_target_refs
    gateway = labels.get(GATEWAY_NAME_LABEL)
    if refs:
        if gateway is None or telemetry.metadata.namespace != namespace:
            return False
        return any(
            ref.kind == "Gateway"
            and (ref.group or "") == "gateway.networking.k8s.io"
            and ref.name == gateway
            and not ref.namespace
            for ref in refs
        )
    selector = spec.selector.match_labels if spec.selector is not None else {}
    return all(labels.get(k) == v for k, v in selector.items())


# ---- access logging ---------------------------------------------------------------------------


def _matches(selector: ModeSelector | None, mode: Mode) -> bool:
    return selector is None or selector.mode in ("CLIENT_AND_SERVER", mode)


def merge_logging(
    levels: Sequence[Sequence[AccessLogging]], defaults: Sequence[str], mode: Mode
) -> dict[str, tuple[bool, str]] | None:
    """istiod's ``mergeLogs``: provider name -> (disabled, CEL filter) for one mode; None
    when no Telemetry configures access logging and there are no default providers (the
    mesh-wide ``accessLogFile`` then applies)."""
    if not levels:
        if not defaults:
            return None
        return {name: (False, "") for name in defaults}
    names_in_scope: list[str] = list(defaults)
    filters: dict[str, str] = {}
    for level in levels:
        names: list[str] = []
        for entry in level:
            if not _matches(entry.match, mode):
                continue
            sub = [p.name for p in entry.providers]
            names += sub
            for name in sub:
                filters[name] = entry.filter.expression if entry.filter is not None else ""
        if names:
            names_in_scope = names
    in_scope = set(names_in_scope)
    providers: dict[str, tuple[bool, str]] = {}
    parent: list[str] = list(defaults)
    for level in levels:
        for entry in level:
            names = [p.name for p in entry.providers] or parent
            parent = names
            for name in names:
                if name not in in_scope or not _matches(entry.match, mode):
                    continue
                if entry.disabled:
                    providers[name] = (True, "")
                else:
                    providers[name] = (False, filters.get(name, ""))
    return providers


def access_logs(
    mesh: MeshConfigSpec, levels: Sequence[Sequence[AccessLogging]], mode: Mode
) -> tuple[FileLog, ...]:
    """The file access logs of one side (istiod's ``setHTTPAccessLog``): the Telemetry
    providers, sorted by name; the mesh's ``accessLogFile`` when the Telemetries leave none
    configured (disabled providers count as configured)."""
    merged = merge_logging(levels, mesh.default_providers.access_logging, mode)
    configured: list[tuple[str, bool, FileLog | None]] = []
    for name, (disabled, expression) in (merged or {}).items():
        provider = find_provider(mesh, name)
        if provider is None:
            continue
        if provider.envoy_file_access_log is None:
            if provider.envoy_otel_als or provider.envoy_http_als or provider.envoy_tcp_als:
                # An access log service istiod would configure and this control plane does not
                # implement (CP0801): it counts as configured, so the mesh file is not used.
                configured.append((provider.name, disabled, None))
            continue  # not an access log provider: istiod skips it
        found = file_log(mesh, provider)
        if found is not None and expression:
            found = FileLog(found.path, found.text, found.json, found.omit_empty_values, expression)
        configured.append((provider.name, disabled, found))
    if not configured:
        if mesh.access_log_file:
            return (mesh_file_log(mesh, mesh.access_log_file),)
        return ()
    configured.sort(key=lambda c: c[0])
    return tuple(log for _, disabled, log in configured if not disabled and log is not None)


# ---- tracing ----------------------------------------------------------------------------------


@dataclass
class _TraceSpec:
    provider: MeshExtensionProvider | None = None
    disabled: bool = False
    sampling: float | None = None
    custom_tags: Mapping[str, Any] | None = None
    use_request_id: bool = True
    istio_tags: bool = True
    no_context_propagation: bool = False


def merge_tracing(
    mesh: MeshConfigSpec, entries: Sequence[Tracing]
) -> tuple[_TraceSpec, _TraceSpec] | None:
    """istiod's ``Telemetries.Tracing``: (client, server) specs, or None when neither a
    Telemetry nor ``defaultProviders.tracing`` configures tracing."""
    defaults = mesh.default_providers.tracing
    if not entries and not defaults:
        return None
    client, server = _TraceSpec(), _TraceSpec()
    if defaults:
        client.provider = server.provider = find_provider(mesh, defaults[0])
    for entry in entries:
        specs = [client, server]
        if entry.match is not None and entry.match.mode == "CLIENT":
            specs = [client]
        elif entry.match is not None and entry.match.mode == "SERVER":
            specs = [server]
        for spec in specs:
            if entry.providers:
                spec.provider = find_provider(mesh, entry.providers[0].name)
            if entry.disable_span_reporting is not None:
                spec.disabled = entry.disable_span_reporting
            if entry.custom_tags:
                spec.custom_tags = entry.custom_tags
            if entry.random_sampling_percentage is not None:
                spec.sampling = entry.random_sampling_percentage
            if entry.use_request_id_for_trace_sampling is not None:
                spec.use_request_id = entry.use_request_id_for_trace_sampling
            if entry.enable_istio_tags is not None:
                spec.istio_tags = entry.enable_istio_tags
            if entry.disable_context_propagation is not None:
                spec.no_context_propagation = entry.disable_context_propagation
    for spec in (client, server):
        if spec.provider is None:
            spec.disabled = True
    return client, server


def proxy_tracing_config(mesh: MeshConfigSpec) -> Mapping[str, Any]:
    """``defaultConfig.tracing`` (ProxyConfig), as written."""
    found = mesh.default_config.get("tracing")
    return found if isinstance(found, dict) else {}


def proxy_sampling(mesh: MeshConfigSpec) -> float:
    """istiod's ``proxyConfigSamplingValue``: ``defaultConfig.tracing.sampling`` (above 100
    means 1), else 1%."""
    value = proxy_tracing_config(mesh).get("sampling")
    if not isinstance(value, int | float) or isinstance(value, bool) or value == 0:
        return DEFAULT_SAMPLING
    return 1.0 if value > 100.0 else float(value)


def _service_tags(
    namespace: str, labels: Mapping[str, str], metadata: Mapping[str, str]
) -> list[CustomTag]:
    """istiod's ``buildServiceTags``."""
    return [
        CustomTag(
            "istio.canonical_revision", "literal", labels.get(CANONICAL_REVISION_LABEL) or "latest"
        ),
        CustomTag(
            "istio.canonical_service", "literal", labels.get(CANONICAL_NAME_LABEL) or "unknown"
        ),
        CustomTag("istio.mesh_id", "literal", metadata.get("MESH_ID") or "unknown"),
        CustomTag("istio.namespace", "literal", namespace or "default"),
        CustomTag("istio.cluster_id", "literal", metadata.get("CLUSTER_ID") or "unknown"),
    ]


def _tags_of(raw: Mapping[str, Any]) -> list[CustomTag]:
    """Custom tags as Telemetry (typed) or ProxyConfig (raw mappings) writes them."""
    out: list[CustomTag] = []
    for name, tag in raw.items():
        read = (
            tag.model_dump(by_alias=True, exclude_none=True) if hasattr(tag, "model_dump") else tag
        )
        if not isinstance(read, dict):
            continue
        if isinstance(read.get("literal"), dict):
            out.append(CustomTag(name, "literal", str(read["literal"].get("value", ""))))
        elif isinstance(read.get("environment"), dict):
            env = read["environment"]
            out.append(
                CustomTag(
                    name, "environment", str(env.get("name", "")), str(env.get("defaultValue", ""))
                )
            )
        elif isinstance(read.get("header"), dict):
            header = read["header"]
            out.append(
                CustomTag(
                    name, "header", str(header.get("name", "")), str(header.get("defaultValue", ""))
                )
            )
        elif isinstance(read.get("formatter"), dict):
            out.append(CustomTag(name, "formatter", str(read["formatter"].get("value", ""))))
    return out


def tracing_settings(
    mesh: MeshConfigSpec,
    services: Mapping[str, MeshService],
    merged: tuple[_TraceSpec, _TraceSpec] | None,
    mode: Mode,
    router: bool,
    tag_source: tuple[str, Mapping[str, str], Mapping[str, str]],
) -> TraceSettings | None:
    """The HCM tracing of one side (istiod's ``configureTracingFromTelemetry``); None: no
    tracing. ``tag_source``: the proxy's namespace, labels and node metadata (Istio's tags)."""
    proxy_config = proxy_tracing_config(mesh)
    max_path = proxy_config.get("maxPathTagLength")
    max_path_tag_length = max_path if isinstance(max_path, int) and max_path > 0 else 0
    if merged is None:
        if not mesh.enable_tracing:
            return None
        istio_tags = proxy_config.get("enableIstioTags", True) is not False
        tags = _service_tags(*tag_source) if istio_tags else []
        raw = proxy_config.get("customTags")
        tags += _tags_of(raw if isinstance(raw, dict) else {})
        return TraceSettings(
            legacy_provider(mesh, services),
            proxy_sampling(mesh),
            tuple(sorted(tags, key=lambda t: t.name)),
            max_path_tag_length,
            router,
        )
    spec = merged[0] if mode == "CLIENT" else merged[1]
    if spec.disabled or spec.provider is None:
        return None
    provider, _ = trace_provider(services, spec.provider)
    if provider is None:
        return None  # istiod logs it and configures no tracing (analyze reports it)
    sampling = spec.sampling if spec.sampling is not None else proxy_sampling(mesh)
    tags = _service_tags(*tag_source) if spec.istio_tags else []
    if spec.custom_tags:
        tags += _tags_of(spec.custom_tags)
    else:
        raw = proxy_config.get("customTags")
        tags += _tags_of(raw if isinstance(raw, dict) else {})
    return TraceSettings(
        provider,
        sampling,
        tuple(sorted(tags, key=lambda t: t.name)),
        provider.max_tag_length or max_path_tag_length,
        router,
        spec.use_request_id,
        spec.no_context_propagation,
    )


def legacy_provider(
    mesh: MeshConfigSpec, services: Mapping[str, MeshService]
) -> TraceProvider | None:
    """``enableTracing`` with ``defaultConfig.tracing.zipkin.address`` (``host:port``):
    istiod puts a Zipkin tracer in the bootstrap; here the address must name a service of
    the registry, whose outbound cluster carries the spans. None otherwise."""
    zipkin = proxy_tracing_config(mesh).get("zipkin")
    address = zipkin.get("address") if isinstance(zipkin, dict) else None
    if not isinstance(address, str) or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    service = _service_by_address(services, host)
    if service is None or service.port(int(port)) is None:
        return None
    cluster = outbound_cluster_name(int(port), None, service.hostname)
    return TraceProvider("zipkin", "zipkin", cluster, service.hostname, path=ZIPKIN_DEFAULT_PATH)


def _service_by_address(services: Mapping[str, MeshService], host: str) -> MeshService | None:
    """``zipkin.istio-system``, ``zipkin.istio-system.svc`` or the FQDN."""
    if host in services:
        return services[host]
    for suffix in (".svc.cluster.local", ".cluster.local"):
        for candidate in (host + suffix, host.removesuffix(".svc") + suffix):
            if candidate in services:
                return services[candidate]
    return None


# ---- the whole resolution ---------------------------------------------------------------------


def resolve_telemetry(
    reads: SnapshotReader,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str,
    router: bool,
    metadata: Mapping[str, str],
    visible: Callable[[], Mapping[str, MeshService]],
) -> WorkloadTelemetry:
    """What the workload's proxy logs and traces on each side (module docstring).
    ``visible``: the services the proxy sees (a tracing provider's cluster must be one of
    them, or Envoy refuses the listeners that name it)."""
    mesh = reads.mesh
    # Read by namespace: a Telemetry change touches the workloads of its namespace (all of
    # them, for the root namespace) and no other.
    candidates: list[Telemetry] = list(reads.in_namespace("Telemetry", root_namespace))
    if namespace != root_namespace:
        candidates += reads.in_namespace("Telemetry", namespace)
    applied = applicable_telemetries(candidates, namespace, labels, root_namespace)
    levels = [t.spec.access_logging for t in applied if t.spec.access_logging]
    tracing_entries = [entry for t in applied for entry in t.spec.tracing]
    merged = merge_tracing(mesh, tracing_entries)
    needs_services = merged is not None or mesh.enable_tracing
    services: Mapping[str, MeshService] = visible() if needs_services else {}
    tag_source = (namespace, labels, metadata)
    sides = {}
    modes: tuple[Mode, ...] = ("CLIENT", "SERVER")
    for mode in modes:
        logs = access_logs(mesh, levels, mode)
        trace = tracing_settings(mesh, services, merged, mode, router, tag_source)
        sides[mode] = SideTelemetry(logs, trace)
    if not sides["CLIENT"] and not sides["SERVER"]:
        return NO_TELEMETRY
    return WorkloadTelemetry(sides["CLIENT"], sides["SERVER"])
