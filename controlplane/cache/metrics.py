"""Prometheus metrics of the caches and of xDS delivery, in the text exposition format (no
client library). One ``XdsMetrics`` is shared: the compiled-config cache counts store changes
and publishes into it, the xDS server pushes, bytes and ACKs; the debug port renders it.

Names follow Prometheus conventions: a ``controlplane_`` prefix, base units (seconds, bytes),
``_total`` on counters. Beside them, ``IstioMetrics`` exports istiod's own names and label
names (``pilot_*``, ``citadel_server_*``) so that Istio's dashboards and alerts work unchanged.
"""

from __future__ import annotations

import bisect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

LabelValues = tuple[str, ...]

# Push and convergence times in a mesh span sub-millisecond to tens of seconds.
TIME_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


_INF = 'le="+Inf"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = labels
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abstractmethod
    def samples(self) -> Iterable[str]:
        """The exposition lines of this metric (each kind renders its own)."""


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[str]:
        for values, v in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.label_names, values)} {_number(v)}"


class Gauge(_Metric):
    """A gauge whose value is read, when scraped, from a function."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[LabelValues, float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        self.read = read

    def samples(self) -> Iterable[str]:
        for values, v in sorted(self.read().items()):
            yield f"{self.name}{_labels(self.label_names, values)} {_number(v)}"


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = TIME_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = buckets
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [0.0] * (len(self.buckets) + 2)
            series[bisect.bisect_left(self.buckets, value)] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, *labels: str) -> float:
        series = self._series.get(labels)
        return series[-1] if series else 0.0

    def samples(self) -> Iterable[str]:
        for values, series in sorted(self._series.items()):
            cumulative = 0.0
            for bound, n in zip(self.buckets, series, strict=False):
                cumulative += n
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, values, le)} {_number(cumulative)}"
            inf = _labels(self.label_names, values, _INF)
            yield f"{self.name}_bucket{inf} {_number(series[-1])}"
            yield f"{self.name}_sum{_labels(self.label_names, values)} {_number(series[-2])}"
            yield f"{self.name}_count{_labels(self.label_names, values)} {_number(series[-1])}"


class XdsMetrics:
    """Every metric the control plane exports; one instance, given to the compiled-config
    cache and the xDS server at construction."""

    def __init__(self) -> None:
        self.pushes = Counter(
            "controlplane_xds_pushes_total",
            "xDS responses sent, by type and protocol.",
            ("type", "protocol"),
        )
        self.sent_bytes = Counter(
            "controlplane_xds_sent_bytes_total",
            "Serialized resource bytes sent in xDS responses, by type.",
            ("type",),
        )
        self.sent_resources = Counter(
            "controlplane_xds_sent_resources_total",
            "Resources sent in xDS responses, by type.",
            ("type",),
        )
        self.nacks = Counter(
            "controlplane_xds_nacks_total",
            "Responses a proxy rejected (NACK), by type.",
            ("type",),
        )
        self.push_time = Histogram(
            "controlplane_xds_push_duration_seconds",
            "Time to compute and write one proxy's pending responses.",
        )
        self.convergence = Histogram(
            "controlplane_xds_convergence_seconds",
            "Time from a configuration change being seen to the proxy's ACK, by type.",
            ("type",),
        )
        self.compile_time = Histogram(
            "controlplane_xds_snapshot_publish_duration_seconds",
            "Time to make a new snapshot current (dependency analysis and invalidation).",
        )
        self.publishes = Counter(
            "controlplane_xds_snapshots_published_total",
            "Snapshots published to the streams (after debouncing).",
        )
        self.store_changes = Counter(
            "controlplane_xds_store_changes_total",
            "Store changes received (before debouncing).",
        )
        self.shared_responses = Counter(
            "controlplane_xds_shared_responses_total",
            "Responses written from an encoding another stream was sent first, by type.",
            ("type",),
        )
        self.unknown_types = Counter(
            "controlplane_xds_unknown_type_requests_total",
            "Requests for a type URL this control plane does not serve (answered with no "
            "resources), by protocol.",
            ("protocol",),
        )
        self.gauges: list[Gauge] = []
        self.istio = IstioMetrics()

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[LabelValues, float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        self.gauges.append(Gauge(name, help_text, read, labels))

    def render(self) -> str:
        lines: list[str] = []
        metrics: list[_Metric] = [
            *self.gauges,
            self.pushes,
            self.sent_bytes,
            self.sent_resources,
            self.nacks,
            self.unknown_types,
            self.push_time,
            self.convergence,
            self.compile_time,
            self.publishes,
            self.store_changes,
            self.shared_responses,
        ]
        for metric in [*metrics, *self.istio.all()]:
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


# istiod's buckets (pilot/pkg/xds/monitoring.go): seconds, coarse, so that its dashboards'
# histogram_quantile queries read the same boundaries.
CONVERGENCE_BUCKETS = (0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)
PUSH_TIME_BUCKETS = (0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)

# Kinds istiod counts as service-registry events (pilot_k8s_reg_events, its kube registry's
# informers), with the ``type`` label value istiod gives each; every other kind is a config
# event (pilot_k8s_cfg_events, ``type`` the kind).
REGISTRY_EVENT_TYPES = {
    "Service": "Services",
    "EndpointSlice": "EndpointSlice",
    "Pod": "Pods",
    "Namespace": "Namespaces",
}


class IstioMetrics:
    """istiod's metric names with istiod's label names, fed where ours are.

    - ``pilot_xds_pushes{type}``: responses sent, ``type`` cds/eds/lds/rds/sds (istiod's
      ``v3.GetMetricType``), and ``<type>_senderr`` for a write that failed;
    - ``pilot_xds_push_time{type}``: seconds to compute and write the push that carried a type;
    - ``pilot_proxy_convergence_time``: change seen to the proxy's ACK;
    - ``pilot_xds{version}``: connected proxies by the Istio version their node metadata
      claims (``ISTIO_VERSION``; ``unknown`` when absent), as istiod labels them;
    - ``pilot_total_xds_rejects{type}``: NACKs;
    - ``pilot_xds_push_context_errors``: snapshots or proxy configurations that failed to
      compile (istiod: failures initialising the push context);
    - ``pilot_k8s_reg_events{type,event}`` / ``pilot_k8s_cfg_events{type,event}``: adds,
      updates and deletes the store received;
    - ``pilot_conflict_*`` (registered by the compiled-config cache when it can compute them);
    - ``citadel_server_*``: CSRs, issuances, root and chain expiry (registered by the CA side).
    """

    def __init__(self) -> None:
        self.pushes = Counter(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds.",
            ("type",),
        )
        self.push_time = Histogram(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            ("type",),
            buckets=PUSH_TIME_BUCKETS,
        )
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required "
            "configuration.",
            buckets=CONVERGENCE_BUCKETS,
        )
        self.rejects = Counter(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy.",
            ("type",),
        )
        self.push_context_errors = Counter(
            "pilot_xds_push_context_errors",
            "Number of errors (timeouts) initiating push context.",
        )
        self.registry_events = Counter(
            "pilot_k8s_reg_events",
            "Events from k8s registry.",
            ("type", "event"),
        )
        self.config_events = Counter(
            "pilot_k8s_cfg_events",
            "Events from k8s config.",
            ("type", "event"),
        )
        self.citadel_csrs = Counter(
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server.",
        )
        self.citadel_issued = Counter(
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded.",
        )
        self.citadel_csr_errors = Counter(
            "citadel_server_csr_sign_err_count",
            "The number of errors occurred when signing the CSR.",
        )
        self.citadel_auth_failures = Counter(
            "citadel_server_authentication_failure_count",
            "The number of authentication failures.",
        )
        self.gauges: list[Gauge] = []

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[LabelValues, float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        self.gauges.append(Gauge(name, help_text, read, labels))

    def store_event(self, kind: str, event: str) -> None:
        """One add, update or delete of a resource of ``kind`` the store received."""
        registry = REGISTRY_EVENT_TYPES.get(kind)
        if registry is not None:
            self.registry_events.inc(registry, event)
        else:
            self.config_events.inc(kind, event)

    def all(self) -> list[_Metric]:
        return [
            *self.gauges,
            self.pushes,
            self.push_time,
            self.convergence,
            self.rejects,
            self.push_context_errors,
            self.registry_events,
            self.config_events,
            self.citadel_csrs,
            self.citadel_issued,
            self.citadel_csr_errors,
            self.citadel_auth_failures,
        ]
