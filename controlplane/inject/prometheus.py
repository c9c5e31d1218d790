"""Istio's metrics merge at injection: the Pod's ``prometheus.io/*`` annotations are pointed at
the in-pod agent's merged endpoint (``:15020/stats/prometheus``), and what the application
asked for moves into the proxy's environment (``ISTIO_PROMETHEUS_ANNOTATIONS``), where
``controlplane sidecar`` reads it to scrape the application and append its metrics to
Envoy's. Pure: annotations in, the new annotations and the environment value out.

As istiod's injector (pkg/kube/inject/webhook.go, applyPrometheusMerge):

* it applies unless the Pod says ``prometheus.io/scrape: "false"`` or
  ``prometheus.istio.io/merge-metrics: "false"``; a Pod without any ``prometheus.io``
  annotation is annotated too (then the merged endpoint serves Envoy's statistics alone);
* annotation keys are compared as Prometheus compares them, after replacing every character
  that is not a letter, digit or ``_`` by ``_`` (``prometheus.io/port``, ``prometheus.io.port``
  and ``prometheus-io/port`` are one key), and every spelling is removed before ours is set;
* a Pod whose port annotation already names the status port is left alone (injected
  before, or the user's own choice);
* an application port that is not a port number, or that is one of the proxy's own ports,
  is refused with the annotation named (scraping 15020 from 15020 would recurse).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.inject.bootstrap import PROMETHEUS_PATH, STATUS_PORT

SCRAPE_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
MERGE_ANNOTATION = "prometheus.istio.io/merge-metrics"
SCRAPE_ANNOTATION = "prometheus.io/scrape"
PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"

_SCRAPE = "prometheus_io_scrape"
_PORT = "prometheus_io_port"
_PATH = "prometheus_io_path"
_OURS = frozenset({_SCRAPE, _PORT, _PATH})

# The proxy's ports (Istio's list of reserved data-plane ports): never an application's
# metrics port.
RESERVED_PORTS: Mapping[int, str] = {
    15000: "Envoy admin",
    15001: "outbound traffic capture",
    15004: "pilot debug",
    15006: "inbound traffic capture",
    15008: "HBONE tunnel",
    15020: "the merged Prometheus endpoint",
    15021: "Envoy health",
    15053: "DNS proxy",
    15090: "Envoy's Prometheus statistics (already merged)",
}


class ScrapeConfigurationError(ValueError):
    """A Pod's ``prometheus.io`` annotations that cannot be merged; the message names the
    annotation and the reason."""


@dataclass(frozen=True)
class MetricsMerge:
    """What injection does to a Pod for the metrics merge."""

    annotations: dict[str, str]  # the Pod's annotations afterwards (all of them)
    scrape_env: str | None  # ISTIO_PROMETHEUS_ANNOTATIONS, when the app asked for anything


def sanitize(key: str) -> str:
    """An annotation key as Prometheus' Kubernetes discovery turns it into a label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool, which istiod uses for these annotations."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def merge_wanted(annotations: Mapping[str, str], *, mesh_default: bool = True) -> bool:
    """Whether this Pod's metrics are merged: the Pod's ``merge-metrics`` annotation, else the
    mesh's ``enablePrometheusMerge`` (on by default), and never when scraping is off."""
    for key, value in annotations.items():
        if sanitize(key) == _SCRAPE and _parse_bool(str(value)) is False:
            return False
    if MERGE_ANNOTATION in annotations:
        value = str(annotations[MERGE_ANNOTATION])
        parsed = _parse_bool(value)
        if parsed is None:
            raise ScrapeConfigurationError(
                f"metadata.annotations[{MERGE_ANNOTATION}]: {value!r} is not a boolean"
            )
        return parsed
    return mesh_default


def merge_metrics(
    annotations: Mapping[str, str],
    *,
    status_port: int = STATUS_PORT,
    mesh_default: bool = True,
) -> MetricsMerge | None:
    """The Pod's annotations and the proxy's scrape environment after the merge, or None when
    the Pod is not merged (opted out, or already pointing at ``status_port``)."""
    if not merge_wanted(annotations, mesh_default=mesh_default):
        return None
    found: dict[str, tuple[str, str]] = {}  # sanitized -> (key as written, value)
    for key, value in annotations.items():
        if sanitize(key) in _OURS:
            found[sanitize(key)] = (key, str(value))
    if _PORT in found and found[_PORT][1] == str(status_port):
        return None
    wanted = {
        name: found[sanitized][1]
        for name, sanitized in (("scrape", _SCRAPE), ("path", _PATH), ("port", _PORT))
        if sanitized in found
    }
    if "port" in wanted:
        _check_port(found[_PORT][0], wanted["port"], status_port)
    kept = {k: v for k, v in annotations.items() if sanitize(k) not in _OURS}
    kept |= {
        PORT_ANNOTATION: str(status_port),
        PATH_ANNOTATION: PROMETHEUS_PATH,
        SCRAPE_ANNOTATION: "true",
    }
    scrape_env = None
    if wanted:
        scrape_env = json.dumps(
            {
                "scrape": wanted.get("scrape", ""),
                "path": wanted.get("path", ""),
                "port": wanted.get("port", ""),
            },
            separators=(",", ":"),
        )
    return MetricsMerge(kept, scrape_env)


def _check_port(key: str, value: str, status_port: int) -> None:
    where = f"metadata.annotations[{key}]"
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ScrapeConfigurationError(f"{where}: {value!r} is not a port number (1-65535)")
    if port == status_port:
        raise ScrapeConfigurationError(
            f"{where}: {value} is the merged metrics port itself (the scrape would recurse)"
        )
    if port in RESERVED_PORTS:
        raise ScrapeConfigurationError(
            f"{where}: {value} is the proxy's port ({RESERVED_PORTS[port]}), not the application's"
        )


@dataclass(frozen=True)
class ScrapeTarget:
    """The application's metrics endpoint, as the in-pod agent reads it from its environment."""

    port: int
    path: str


def scrape_target(env_value: str | None) -> ScrapeTarget | None:
    """``ISTIO_PROMETHEUS_ANNOTATIONS`` -> the application's endpoint (Istio's defaults: path
    ``/metrics``, port 80), or None when there is none or scraping is off. Raises
    ScrapeConfigurationError for a value that is not the JSON injection writes."""
    if not env_value:
        return None
    try:
        config = json.loads(env_value)
        if not isinstance(config, dict):
            raise TypeError("not an object")
        scrape = str(config.get("scrape") or "")
        path = str(config.get("path") or "/metrics")
        port = int(config.get("port") or 80)
    except (ValueError, TypeError) as exc:
        raise ScrapeConfigurationError(f"{SCRAPE_ENV}: {env_value!r}: {exc}") from None
    if scrape == "false":
        return None
    if port in RESERVED_PORTS:
        raise ScrapeConfigurationError(
            f"{SCRAPE_ENV}: port {port} is the proxy's port ({RESERVED_PORTS[port]})"
        )
    return ScrapeTarget(port, path if path.startswith("/") else "/" + path)
