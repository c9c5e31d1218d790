"""The in-pod merged metrics endpoint (Istio's agent status port, 15020): ``GET
/stats/prometheus`` answers with Envoy's statistics (scraped from the proxy's own Prometheus
listener, 15090) followed by the application's metrics (scraped from the port and path the
Pod's ``prometheus.io`` annotations named before injection moved them into
``ISTIO_PROMETHEUS_ANNOTATIONS``; see ``controlplane.inject.prometheus``).

Served by ``controlplane sidecar`` (and ``controlplane gateway``, Envoy's statistics only) from
a thread of the process that already supervises Envoy: that process stays Envoy's parent to
hot-restart it when the service-account token is renewed, so the endpoint costs a thread,
not another process, and signals keep going to one place (SIGTERM stops Envoy, then this).

As istiod's agent (pilot/cmd/pilot-agent/status/server.go, handleStats): the merge is a
concatenation (the application's last); a scrape that fails on one side still returns the
other, with the failure in the log and in ``controlplane_agent_scrape_failures_total``, so a
broken application never hides the proxy's metrics; the query string is passed to Envoy
(``?usedonly``, ``?filter=``); Prometheus's ``X-Prometheus-Scrape-Timeout-Seconds`` bounds
each scrape.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from controlplane.inject.bootstrap import PROMETHEUS_PATH
from controlplane.inject.prometheus import ScrapeTarget

log = logging.getLogger("controlplane.sidecar.metrics")

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_TIMEOUT = 10.0


class MergedMetrics:
    """What one scrape of the merged endpoint gathers (no server: the testable part)."""

    def __init__(self, envoy_port: int | None, app: ScrapeTarget | None) -> None:
        self.envoy_port = envoy_port
        self.app = app
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _fetch(self, url: str, timeout: float, source: str) -> bytes | None:
        request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("merged metrics: scraping %s (%s) failed: %s", source, url, exc)
            with self._lock:
                self.failures[source] += 1
            return None

    def gather(self, query: str = "", timeout: float = DEFAULT_TIMEOUT) -> bytes:
        parts: list[bytes] = []
        if self.envoy_port:
            url = f"http://127.0.0.1:{self.envoy_port}{PROMETHEUS_PATH}"
            parts.append(self._fetch(url + (f"?{query}" if query else ""), timeout, "envoy") or b"")
        if self.app is not None:
            url = f"http://127.0.0.1:{self.app.port}{self.app.path}"
            parts.append(self._fetch(url, timeout, "application") or b"")
        with self._lock:
            failures = dict(self.failures)
        parts.append(_failure_metric(failures))
        return b"".join(p if not p or p.endswith(b"\n") else p + b"\n" for p in parts)


def _failure_metric(failures: dict[str, int]) -> bytes:
    lines = [
        "# HELP controlplane_agent_scrape_failures_total Scrapes of the merged endpoint that "
        "could not reach one side (envoy or application).",
        "# TYPE controlplane_agent_scrape_failures_total counter",
    ]
    lines += [
        f'controlplane_agent_scrape_failures_total{{source="{source}"}} {failures.get(source, 0)}'
        for source in ("envoy", "application")
    ]
    return ("\n".join(lines) + "\n").encode()


def _timeout(header: str | None) -> float:
    try:
        value = float(header) if header else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def _handler(metrics: MergedMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path != PROMETHEUS_PATH:
                self._answer(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
                return
            timeout = _timeout(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
            self._answer(HTTPStatus.OK, metrics.gather(url.query, timeout), TEXT_FORMAT)

        def _answer(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # one line per scrape is noise
            pass

    return Handler


class MergedMetricsServer:
    """The endpoint on ``address:port``, served from a daemon thread until ``stop``."""

    def __init__(self, metrics: MergedMetrics, port: int, address: str = "0.0.0.0") -> None:
        self.metrics = metrics
        self.server = ThreadingHTTPServer((address, port), _handler(metrics))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="merged-metrics", daemon=True
        )

    def start(self) -> MergedMetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
