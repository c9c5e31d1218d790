"""Prometheus from a real sidecar: Envoy's statistics on the bootstrap's Prometheus listener
(Istio's 15090 in a Pod; a free port here, where many Envoys share the host) and the merged
endpoint (15020 in a Pod) that appends the application's metrics; the README's PromQL read
against what a real scrape returns."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from controlplane.inject.merged_metrics import MergedMetrics, MergedMetricsServer
from controlplane.inject.prometheus import ScrapeTarget
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes
from tests.support.prometheus import Sample, parse, value

V1, V2 = "127.0.15.11", "127.0.15.12"
APP_V1 = "127.0.15.111"
CLIENT = "sidecar~127.0.15.1~productpage.default~default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
APP_METRICS = (
    "# HELP shop_orders_total Orders taken.\n"
    "# TYPE shop_orders_total counter\n"
    'shop_orders_total{shop="books"} 7\n'
)


class _AppMetrics(BaseHTTPRequestHandler):
    """A test application exposing its own metrics at /metrics."""

    def do_GET(self) -> None:  # noqa: N802
        body = APP_METRICS.encode() if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"] or "", exc.read().decode()


def _scrape(url: str) -> dict[Sample, float]:
    status, content_type, text = _get(url)
    assert status == 200, text
    assert content_type.startswith("text/plain"), content_type
    return parse(text)[0]


def types_of(port: int) -> dict[str, str]:
    return parse(_get(f"http://127.0.0.1:{port}/stats/prometheus")[2])[1]


def _select(samples: dict[Sample, float], name: str, **matchers: str) -> dict[Sample, float]:
    """The samples of ``name`` whose labels fully match the regexes (PromQL's ``=~``)."""
    return {
        (n, labels): v
        for (n, labels), v in samples.items()
        if n == name
        and all(re.fullmatch(rx, dict(labels).get(key, "")) for key, rx in matchers.items())
    }


@dataclass
class Served:
    mesh: LocalMesh
    client: Sidecar
    prom: int  # the client sidecar's Prometheus port
    server: Sidecar  # reviews-v1's sidecar (inbound), its app on APP_V1
    server_prom: int
    port: int  # the pods' target port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    mesh = LocalMesh(Path(tmp_path_factory.mktemp("promstats")))
    try:
        port = free_port()
        mesh.backend("reviews-v1", APP_V1, port)  # behind its sidecar, on POD V1
        mesh.backend("reviews-v2", V2, port)
        mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port))
        mesh.write("split.yaml", meshes.split("reviews", {"v1": 50, "v2": 50}))
        mesh.start()
        server_prom = free_port()
        server = mesh.sidecar(
            f"sidecar~{V1}~reviews-v1.default~default.svc.cluster.local",
            labels={"app": "reviews", "version": "v1"},
            service_account="reviews",
            app_address=APP_V1,
            prometheus_port=server_prom,
        )
        prom = free_port()
        client = mesh.sidecar(
            CLIENT,
            labels={"app": "productpage"},
            service_account="productpage",
            prometheus_port=prom,
        )
        answered = count_backends(client.outbound_port, "reviews:9080", 20)
        assert sum(answered.values()) == 20 and set(answered) == {"reviews-v1", "reviews-v2"}
        yield Served(mesh, client, prom, server, server_prom, port)
    finally:
        mesh.stop()


def test_envoy_statistics_are_served_in_prometheus_text_on_the_prometheus_port(served):
    sidecar, prom = served.client, served.prom
    samples = _scrape(f"http://127.0.0.1:{prom}/stats/prometheus")
    # Requests per destination: the cluster name carries direction|port|subset|host.
    per_subset = {
        subset: value(
            samples,
            "envoy_cluster_upstream_rq_total",
            cluster_name=f"outbound|9080|{subset}|{REVIEWS}",
        )
        for subset in ("v1", "v2")
    }
    assert sum(per_subset.values()) == 20 and min(per_subset.values()) > 0, per_subset
    # The same number as the admin API's own counter (it is Envoy's statistic, not ours).
    assert per_subset["v1"] == sidecar.envoy.stat(
        f"cluster.outbound|9080|v1|{REVIEWS}.upstream_rq_total"
    )
    # Response classes and latency histograms, as dashboards read them.
    ok = _select(
        samples,
        "envoy_cluster_upstream_rq",
        cluster_name=rf"outbound\|9080\|.*\|{re.escape(REVIEWS)}",
        response_code_class="2xx",
    )
    assert sum(ok.values()) == 20
    by_code = _select(
        samples,
        "envoy_cluster_upstream_rq",
        cluster_name=rf"outbound\|9080\|v2\|{re.escape(REVIEWS)}",
        response_code="200",
    )
    assert list(by_code.values()) == [per_subset["v2"]]
    # Latency histograms reach the output when Envoy flushes its statistics (every 5 s).
    v1_cluster = rf"outbound\|9080\|v1\|{re.escape(REVIEWS)}"
    deadline = time.time() + 12
    while True:
        buckets = _select(
            samples, "envoy_cluster_upstream_rq_time_bucket", cluster_name=v1_cluster, le=r"\+Inf"
        )
        if list(buckets.values()) == [per_subset["v1"]] or time.time() > deadline:
            break
        time.sleep(0.5)
        samples = _scrape(f"http://127.0.0.1:{prom}/stats/prometheus")
    assert list(buckets.values()) == [per_subset["v1"]]
    assert types_of(prom)["envoy_cluster_upstream_rq_time"] == "histogram"
    # The client's outbound connection manager, named by its listener (the host's dots
    # stay in the label, not in the metric name).
    outbound = f"outbound_127.0.0.1_{sidecar.outbound_port}"
    assert value(samples, "envoy_http_downstream_rq_total", http_conn_manager_prefix=outbound) == 20
    assert (
        value(
            samples,
            "envoy_http_downstream_rq",
            http_conn_manager_prefix=outbound,
            response_code_class="2xx",
        )
        == 20
    )
    assert (
        value(
            samples,
            "envoy_listener_downstream_cx_total",
            listener_address=f"127.0.0.1_{sidecar.outbound_port}",
        )
        >= 1
    )
    # No metric name carries a piece of a host name (the tags took all of it).
    assert not [name for name, _ in samples if "svc_cluster_local" in name or "0_0_1" in name]


def test_the_server_sidecar_counts_the_inbound_requests_it_served(served):
    samples = _scrape(f"http://127.0.0.1:{served.server_prom}/stats/prometheus")
    v1 = served.client.envoy.stat(f"cluster.outbound|9080|v1|{REVIEWS}.upstream_rq_total")
    inbound = f"inbound|{served.port}||"
    assert value(samples, "envoy_cluster_upstream_rq_total", cluster_name=inbound) == v1 > 0
    assert (
        value(samples, "envoy_cluster_upstream_rq", cluster_name=inbound, response_code_class="2xx")
        == v1
    )
    # The inbound connection manager, named by the pod's address and port.
    prefix = f"inbound_{V1}_{served.port}"
    assert _select(samples, "envoy_http_downstream_rq_total", http_conn_manager_prefix=prefix)
    assert (
        value(
            samples,
            "envoy_http_downstream_rq",
            http_conn_manager_prefix=prefix,
            response_code_class="2xx",
        )
        == v1
    )


def test_the_prometheus_port_serves_statistics_only_never_the_admin_api(served):
    prom = served.prom
    for path in ("/config_dump", "/clusters", "/quitquitquit", "/stats"):
        status, _, _ = _get(f"http://127.0.0.1:{prom}{path}")
        assert status == 404, path
    # ... and Envoy is still there after the attempt.
    assert _get(f"http://127.0.0.1:{prom}/stats/prometheus")[0] == 200


def test_the_merged_endpoint_returns_envoys_and_the_applications_metrics(served):
    prom = served.prom
    app = ThreadingHTTPServer(("127.0.0.1", 0), _AppMetrics)
    Thread(target=app.serve_forever, daemon=True).start()
    target = ScrapeTarget(int(app.server_address[1]), "/metrics")
    merged = MergedMetricsServer(MergedMetrics(prom, target), 0, address="127.0.0.1").start()
    url = f"http://127.0.0.1:{merged.port}/stats/prometheus"
    try:
        samples = _scrape(url)
        assert value(samples, "shop_orders_total", shop="books") == 7
        envoy = value(
            samples,
            "envoy_cluster_upstream_rq_total",
            cluster_name=f"outbound|9080|v1|{REVIEWS}",
        )
        assert envoy > 0
        assert value(samples, "controlplane_agent_scrape_failures_total", source="application") == 0
        # The query string reaches Envoy (Istio passes it on: ?filter= narrows the output).
        filtered = _scrape(url + "?filter=upstream_rq_total")
        assert value(filtered, "shop_orders_total", shop="books") == 7
        assert not _select(filtered, "envoy_http_downstream_rq_total")
        # An application that stops answering does not hide the proxy's metrics.
        app.shutdown()
        app.server_close()
        samples = _scrape(url)
        assert value(samples, "shop_orders_total", shop="books") == 0
        assert (
            value(
                samples,
                "envoy_cluster_upstream_rq_total",
                cluster_name=f"outbound|9080|v1|{REVIEWS}",
            )
            == envoy
        )
        assert value(samples, "controlplane_agent_scrape_failures_total", source="application") == 1
        assert _get(f"http://127.0.0.1:{merged.port}/metrics")[0] == 404
    finally:
        merged.stop()


def test_the_sidecar_entry_serves_both_endpoints_and_stops_envoy_on_sigterm(served, tmp_path: Path):
    """`controlplane sidecar` as the injected container runs it (the application's scrape
    annotations in its environment, as injection moved them): Envoy's statistics on the
    Prometheus port, the merged endpoint with the application's metrics, and SIGTERM ends
    Envoy and the entry."""
    import json
    import os
    import signal
    import subprocess
    import sys

    app = ThreadingHTTPServer(("127.0.0.1", 0), _AppMetrics)
    Thread(target=app.serve_forever, daemon=True).start()
    prom, status, admin = free_port(), free_port(), free_port()
    node_id = "sidecar~127.0.15.30~ratings-1.shop~shop.svc.cluster.local"
    (tmp_path / "labels").write_text('app="ratings"\n')
    env = dict(
        os.environ,
        POD_NAME="ratings-1",
        POD_NAMESPACE="shop",
        INSTANCE_IP="127.0.15.30",
        SERVICE_ACCOUNT="ratings",
        ISTIO_PROMETHEUS_ANNOTATIONS=json.dumps(
            {"scrape": "true", "path": "/metrics", "port": str(app.server_address[1])}
        ),
    )
    log = open(tmp_path / "sidecar.log", "wb")  # noqa: SIM115 (closed below)
    entry = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "sidecar",
         "--xds-address", "127.0.0.1", "--xds-port", str(served.mesh.xds_port),
         "--token-path", str(tmp_path / "no-token"), "--labels-path", str(tmp_path / "labels"),
         "--bootstrap-path", str(tmp_path / "envoy.yaml"), "--admin-port", str(admin),
         "--prometheus-port", str(prom), "--status-port", str(status)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 20
        while True:
            try:
                merged = _scrape(f"http://127.0.0.1:{status}/stats/prometheus")
                if any(n == "envoy_server_live" for n, _ in merged):
                    break
            except (OSError, AssertionError):
                pass
            assert entry.poll() is None, (tmp_path / "sidecar.log").read_text()
            assert time.time() < deadline, (tmp_path / "sidecar.log").read_text()
            time.sleep(0.1)
        served.mesh.debug.wait_synced(node_id, types=("cds", "eds", "lds"), timeout=30)
        assert value(merged, "shop_orders_total", shop="books") == 7
        assert value(merged, "envoy_cluster_upstream_cx_total", cluster_name="xds-grpc") >= 0
        assert any(
            n == "envoy_server_live"
            for n, _ in _scrape(f"http://127.0.0.1:{prom}/stats/prometheus")
        )
        envoy_pids = subprocess.run(
            ["pgrep", "-P", str(entry.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(envoy_pids) == 1
        entry.send_signal(signal.SIGTERM)
        assert entry.wait(timeout=20) == 0, (tmp_path / "sidecar.log").read_text()
        assert not Path(f"/proc/{envoy_pids[0]}").exists() or (
            "zombie" in Path(f"/proc/{envoy_pids[0]}/status").read_text()
        )
        for port in (prom, status):
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=2)
    finally:
        if entry.poll() is None:
            entry.kill()
            entry.wait()
        log.close()
        app.shutdown()
