"""telemetry.istio.io Telemetry (v1, v1alpha1): access logs, tracing and metrics per workload.

Every field of Istio's proto (istio/api telemetry/v1alpha1/telemetry.proto) is declared; what
the compiler implements is listed in ``controlplane.api.support`` (the rest is reported as
unsupported). Validation is istiod's (``ValidateTelemetry`` in pkg/config/validation): one of
selector / targetRef / targetRefs, selector labels without wildcards, provider names not
empty, a sampling percentage in [0, 100], custom tags with their required values, metric tag
overrides that agree with their operation; several tracing entries or providers are
warnings. What a Telemetry does to a proxy is decided in ``controlplane.compile.telemetry``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import Duration, IstioModel, ObjectMeta
from controlplane.api.cel import cel_syntax_problem
from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.networking import WorkloadSelector
from controlplane.api.resources import register
from controlplane.api.security import PolicyTargetReference
from controlplane.api.validation import register_validator

WorkloadMode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]
IstioMetric = Literal[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
]


class ProviderRef(IstioModel):
    name: str = ""


class ModeSelector(IstioModel):
    """``match`` of a tracing or access logging entry: which side of the proxy it is for."""

    mode: WorkloadMode = "CLIENT_AND_SERVER"


class LiteralTag(IstioModel):
    value: str = ""


class EnvironmentTag(IstioModel):
    name: str = ""
    default_value: str = ""


class HeaderTag(IstioModel):
    name: str = ""
    default_value: str = ""


class FormatterTag(IstioModel):
    value: str = ""


class CustomTag(IstioModel):
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None
    formatter: FormatterTag | None = None


class Tracing(IstioModel):
    match: ModeSelector | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: float | None = None
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None
    disable_context_propagation: bool | None = None


class MetricSelector(IstioModel):
    metric: IstioMetric | None = None
    custom_metric: str | None = None
    mode: WorkloadMode = "CLIENT_AND_SERVER"


class TagOverride(IstioModel):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str = ""


class MetricsOverrides(IstioModel):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)


class Metrics(IstioModel):
    providers: list[ProviderRef] = Field(default_factory=list)
    overrides: list[MetricsOverrides] = Field(default_factory=list)
    reporting_interval: Duration | None = None


class AccessLogFilter(IstioModel):
    expression: str = ""


class AccessLogging(IstioModel):
    match: ModeSelector | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


class TelemetrySpec(IstioModel):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    tracing: list[Tracing] = Field(default_factory=list)
    metrics: list[Metrics] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)

    @property
    def all_target_refs(self) -> list[PolicyTargetReference]:
        return ([self.target_ref] if self.target_ref is not None else []) + self.target_refs

    @property
    def namespace_wide(self) -> bool:
        """No selector labels and no target: the namespace's (or, in the root namespace, the
        mesh's) Telemetry, as istiod tells them apart."""
        labels = self.selector.match_labels if self.selector is not None else {}
        return not labels and not self.all_target_refs


class Telemetry(IstioModel):
    api_version: str = "telemetry.istio.io/v1"
    kind: Literal["Telemetry"] = "Telemetry"
    metadata: ObjectMeta
    spec: TelemetrySpec


# ---- validation (istiod's ValidateTelemetry) -------------------------------------------------


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def _check_providers(path: str, providers: list[ProviderRef]) -> list[Issue]:
    for i, provider in enumerate(providers):
        if not provider.name:
            return [_error(f"{path}[{i}].name", "providers.name may not be empty")]
    return []


def _check_targets(spec: TelemetrySpec) -> list[Issue]:
    found: list[Issue] = []
    kinds = sum((spec.selector is not None, spec.target_ref is not None, bool(spec.target_refs)))
    if kinds > 1:
        found.append(_error("spec", "only one of targetRefs or workloadSelector can be set"))
    if spec.selector is not None:
        for k, v in spec.selector.match_labels.items():
            path = f"spec.selector.matchLabels.{k}"
            if k == "":
                found.append(_error(path, f"empty key is not supported in selector: {k}={v!r}"))
            if "*" in k or "*" in v:
                found.append(_error(path, f"wildcard is not supported in selector: {k}={v}"))
        if not spec.selector.match_labels:
            found.append(_warning("spec.selector", "workload selector specified without labels"))
    refs = [("spec.targetRef", spec.target_ref)] if spec.target_ref is not None else []
    refs += [(f"spec.targetRefs[{i}]", ref) for i, ref in enumerate(spec.target_refs)]
    for path, ref in refs:
        if not ref.name:
            found.append(_error(f"{path}.name", "targetRef name must be set"))
        if ref.namespace:
            found.append(
                _error(
                    f"{path}.namespace",
                    "targetRef namespace must not be set; cross namespace referencing is not "
                    "supported",
                )
            )
        allowed = {
            ("gateway.networking.k8s.io", "Gateway"),
            ("gateway.networking.k8s.io", "GatewayClass"),
            ("", "Service"),
            ("networking.istio.io", "ServiceEntry"),
        }
        if (ref.group or "", ref.kind) not in allowed:
            found.append(
                _error(
                    path,
                    f"targetRef must be to one of {sorted(f'{g}/{k}' for g, k in allowed)} "
                    f"but was {ref.group or ''}/{ref.kind}",
                )
            )
    return found


def _check_tracing(tracing: list[Tracing]) -> list[Issue]:
    found: list[Issue] = []
    if len(tracing) > 1:
        found.append(_warning("spec.tracing", "multiple tracing is not currently supported"))
    for i, entry in enumerate(tracing):
        path = f"spec.tracing[{i}]"
        if len(entry.providers) > 1:
            found.append(
                _warning(f"{path}.providers", "multiple providers is not currently supported")
            )
        found += _check_providers(f"{path}.providers", entry.providers)
        percentage = entry.random_sampling_percentage
        if percentage is not None and not 0.0 <= percentage <= 100.0:
            found.append(
                _error(
                    f"{path}.randomSamplingPercentage",
                    "randomSamplingPercentage must be in range [0.0, 100.0]",
                )
            )
        for name, tag in entry.custom_tags.items():
            tpath = f"{path}.customTags.{name}"
            if name == "":
                found.append(_error(tpath, "tag name may not be empty"))
            set_kinds = [
                k for k in ("literal", "environment", "header", "formatter") if getattr(tag, k)
            ]
            if len(set_kinds) > 1:
                found.append(_error(tpath, f"only one of {', '.join(set_kinds)} may be set"))
            if tag.literal is not None and not tag.literal.value:
                found.append(_error(f"{tpath}.literal.value", "literal tag value may not be empty"))
            if tag.header is not None and not tag.header.name:
                found.append(_error(f"{tpath}.header.name", "header tag name may not be empty"))
            if tag.environment is not None and not tag.environment.name:
                found.append(
                    _error(f"{tpath}.environment.name", "environment tag name may not be empty")
                )
    return found


def _check_metrics(metrics: list[Metrics]) -> list[Issue]:
    found: list[Issue] = []
    for i, entry in enumerate(metrics):
        path = f"spec.metrics[{i}]"
        found += _check_providers(f"{path}.providers", entry.providers)
        for j, override in enumerate(entry.overrides):
            opath = f"{path}.overrides[{j}]"
            for tag, change in override.tag_overrides.items():
                tpath = f"{opath}.tagOverrides.{tag}"
                if tag == "":
                    found.append(_warning(tpath, "tagOverrides.name may not be empty"))
                if change.operation == "UPSERT" and not change.value:
                    found.append(
                        _error(tpath, "tagOverrides.value must be set when operation is UPSERT")
                    )
                if change.operation == "REMOVE" and change.value:
                    found.append(
                        _error(tpath, "tagOverrides.value may only be set when operation is UPSERT")
                    )
            match = override.match
            if match is not None:
                if match.metric is not None and match.custom_metric is not None:
                    found.append(
                        _error(f"{opath}.match", "only one of metric and customMetric may be set")
                    )
                if match.custom_metric == "":
                    found.append(
                        _error(f"{opath}.match.customMetric", "customMetric may not be empty")
                    )
    return found


def _check_access_logging(logging: list[AccessLogging]) -> list[Issue]:
    found: list[Issue] = []
    for i, entry in enumerate(logging):
        path = f"spec.accessLogging[{i}]"
        found += _check_providers(f"{path}.providers", entry.providers)
        if entry.filter is not None:
            problem = cel_syntax_problem(entry.filter.expression)
            if problem is not None:
                found.append(
                    _error(
                        f"{path}.filter.expression",
                        f"must be a valid CEL expression, {problem}",
                    )
                )
    return found


def _unsupported(path: str, reason: str) -> Issue:
    return Issue(Codes.UNSUPPORTED_FIELD, path, f"not supported: {reason}; ignored")


_STATS_FILTER = (
    "it configures Istio's stats filter (istio_requests_total and friends), which upstream "
    "Envoy does not have; Envoy's own statistics (/stats/prometheus) are unchanged"
)


def _check_unsupported(spec: TelemetrySpec) -> list[Issue]:
    """Fields declared but not implemented, each with why (see ``api/support.py``)."""
    found: list[Issue] = []
    for i, metrics in enumerate(spec.metrics):
        if metrics.overrides:
            found.append(_unsupported(f"spec.metrics[{i}].overrides", _STATS_FILTER))
        if metrics.reporting_interval is not None:
            found.append(_unsupported(f"spec.metrics[{i}].reportingInterval", _STATS_FILTER))
    for i, tracing in enumerate(spec.tracing):
        if tracing.disable_context_propagation is not None:
            found.append(
                _unsupported(
                    f"spec.tracing[{i}].disableContextPropagation",
                    "this Envoy's HTTP connection manager has no switch to stop propagating "
                    "trace context",
                )
            )
    return found


def validate_telemetry(telemetry: Telemetry) -> list[Issue]:
    spec = telemetry.spec
    return (
        _check_targets(spec)
        + _check_metrics(spec.metrics)
        + _check_tracing(spec.tracing)
        + _check_access_logging(spec.access_logging)
        + _check_unsupported(spec)
    )


register("telemetry.istio.io", "Telemetry", Telemetry, frozenset({"v1", "v1alpha1"}))
register_validator("Telemetry", validate_telemetry)
