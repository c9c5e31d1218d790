"""Prometheus metrics of the caches and of xDS delivery, in the text exposition format (no
client library). One ``XdsMetrics`` is shared: the compiled-config cache counts store changes
and publishes into it, the xDS server pushes, bytes and ACKs; the debug port renders it.

Names follow Prometheus conventions: a ``controlplane_`` prefix, base units (seconds, bytes),
``_total`` on counters.
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
        for metric in metrics:
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
