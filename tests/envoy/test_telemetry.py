"""The Telemetry API through real Envoys: a client sidecar (outbound, CLIENT mode) calls
``reviews`` through its sidecar (inbound, SERVER mode); access logs are files Envoy writes,
read back and parsed here (Istio's default text format and its JSON fields); spans go to a
Zipkin-compatible collector written here (``POST /api/v2/spans`` on loopback), named by the
mesh config's ``extensionProviders``. Precedence as istiod's: the root namespace's Telemetry,
overridden by the namespace's, overridden by one selecting the workload; ``match.mode``
picks the side.
"""

from __future__ import annotations

import http.client
import json
import shlex
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from tests.envoy.traffic_mesh import wait_until

POD, APP = "127.0.8.10", "127.0.8.110"
COLLECTOR = "127.0.8.20"
CLIENT_ID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
REVIEWS_ID = f"sidecar~{POD}~reviews-v1.default~default.svc.cluster.local"
REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


class ZipkinCollector:
    """Accepts Zipkin v2 JSON spans (``POST /api/v2/spans``) and keeps them."""

    def __init__(self, host: str, port: int) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                out = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out

            def do_POST(self) -> None:
                body = self._body()
                if self.path == "/api/v2/spans":
                    with outer.lock:
                        outer.spans.extend(json.loads(body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans_for(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if path in s.get("tags", {}).get("http.url", "")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def mesh_yaml(logs: Path) -> str:
    return f"""
    extensionProviders:
    - name: text-log
      envoyFileAccessLog: {{path: {logs / "text.log"}}}
    - name: json-log
      envoyFileAccessLog:
        path: {logs / "json.log"}
        logFormat: {{labels: {{}}}}
    - name: zipkin
      zipkin: {{service: zipkin.istio-system.svc.cluster.local, port: 9411}}
    """


def services_yaml(app_port: int, collector_port: int) -> str:
    return f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: reviews, namespace: default}}
    spec:
      selector: {{app: reviews}}
      ports: [{{name: http, port: 9080, targetPort: {app_port}}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: reviews-v1, namespace: default, labels: {{app: reviews}}}}
    status: {{podIP: {POD}}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: zipkin, namespace: istio-system}}
    spec:
      selector: {{app: zipkin}}
      ports: [{{name: http, port: 9411, targetPort: {collector_port}}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: zipkin-0, namespace: istio-system, labels: {{app: zipkin}}}}
    status: {{podIP: {COLLECTOR}}}
    """


def telemetry(name: str, namespace: str, body: str, selector: str = "") -> str:
    return f"""
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      {selector}
      {body}
    """


class World:
    def __init__(self, mesh: LocalMesh, logs: Path) -> None:
        self.mesh = mesh
        self.logs = logs
        self.app_port = free_port()
        collector_port = free_port()
        self.app = mesh.backend("reviews-app", APP, self.app_port)
        self.collector = ZipkinCollector(COLLECTOR, collector_port)
        mesh.write("mesh.yaml", mesh_yaml(logs))
        mesh.write("services.yaml", services_yaml(self.app_port, collector_port))
        mesh.start()
        self.client: Sidecar = mesh.sidecar(
            CLIENT_ID, labels={"app": "client"}, service_account="client"
        )
        self.reviews: Sidecar = mesh.sidecar(
            REVIEWS_ID, labels={"app": "reviews"}, service_account="reviews", app_address=APP
        )

    def configure(self, files: dict[str, str], *checks: Callable[[], bool]) -> None:
        """Write the Telemetry files (removing the others) and wait for ``checks``."""
        for old in self.mesh.config_dir.glob("telemetry-*.yaml"):
            if old.name not in files:
                old.unlink()
        for name, text in files.items():
            self.mesh.write(name, text)
        for check in checks:
            assert wait_until(check, timeout=15)
        # Connections accepted before the update keep the old filter chain until Envoy
        # drains them (--drain-time-s 1): one request to close the client's pooled
        # connection, and the drain time.
        self.call("/drain")
        time.sleep(1.2)

    def listeners(self, sidecar: Sidecar) -> str:
        return sidecar.envoy.admin("/config_dump?resource=dynamic_listeners")

    def inbound(self) -> str:
        """The reviews sidecar's inbound listener (``<pod IP>_<port>``), as JSON text."""
        dump = json.loads(self.listeners(self.reviews))
        found = [
            entry["active_state"]["listener"]
            for entry in dump["configs"]
            if entry.get("name", "").startswith(POD) and "active_state" in entry
        ]
        return json.dumps(found)

    def call(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.client.outbound_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": "reviews:9080"})
            reply = conn.getresponse()
            reply.read()
            return reply.status
        finally:
            conn.close()

    def lines(self, name: str, path: str) -> list[str]:
        """The lines of log ``name`` about requests for ``path`` (after both Envoys flush)."""
        for sidecar in (self.client, self.reviews):
            request = urllib.request.Request(
                f"http://127.0.0.1:{sidecar.admin_port}/reopen_logs", method="POST"
            )
            urllib.request.urlopen(request, timeout=5).read()
        log = self.logs / name
        if not log.exists():
            return []
        return [line for line in log.read_text().splitlines() if path in line]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("telemetry")
    logs = workdir / "logs"
    logs.mkdir()
    mesh = LocalMesh(workdir)
    found: World | None = None
    try:
        found = World(mesh, logs)
        yield found
    finally:
        mesh.stop()
        if found is not None:
            found.collector.stop()


def samplings(dump: str) -> list[float]:
    """Every tracing random_sampling percentage in a listener dump."""
    found: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "random_sampling":
                    found.append(float(value.get("value", 0.0)))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(dump))
    return found


def unique_path() -> str:
    return f"/telemetry/{uuid.uuid4().hex[:12]}"


def text_fields(line: str) -> list[str]:
    """Istio's default text line, split: the start time dropped, quoted fields kept whole."""
    assert line.startswith("["), line
    return shlex.split(line[line.index("]") + 1 :])


def wait_lines(world: World, name: str, path: str, count: int) -> list[str]:
    found: list[str] = []

    def enough() -> bool:
        found[:] = world.lines(name, path)
        return len(found) >= count

    wait_until(enough, timeout=10)
    return found


ROOT_TEXT = telemetry(
    "mesh-default", "istio-system", "accessLogging: [{providers: [{name: text-log}]}]"
)


def test_each_request_is_logged_by_both_sidecars_in_istios_default_text_format(
    world: World,
) -> None:
    world.configure(
        {"telemetry-root.yaml": ROOT_TEXT},
        lambda: "text.log" in world.listeners(world.client),
        lambda: "text.log" in world.inbound(),
    )
    path = unique_path()
    assert world.call(path) == 200
    lines = wait_lines(world, "text.log", path, 2)
    assert len(lines) == 2, lines
    by_cluster = {text_fields(line)[15]: text_fields(line) for line in lines}
    outbound = by_cluster[REVIEWS_CLUSTER]  # the client's outbound side
    assert outbound[0] == f"GET {path} HTTP/1.1"
    assert outbound[1] == "200"
    assert outbound[13] == "reviews:9080"  # authority
    assert outbound[14].startswith(f"{POD}:")  # upstream host: the reviews pod
    inbound = by_cluster[f"inbound|{world.app_port}||"]  # the reviews sidecar's inbound side
    assert inbound[0] == f"GET {path} HTTP/1.1"
    assert inbound[1] == "200"
    assert inbound[14] == f"{APP}:{world.app_port}"
    # one request id across both hops
    assert outbound[12] == inbound[12] and outbound[12] != "-"


def test_the_namespace_telemetry_overrides_the_roots_and_logs_istios_json_fields(
    world: World,
) -> None:
    world.configure(
        {
            "telemetry-root.yaml": ROOT_TEXT,
            "telemetry-ns.yaml": telemetry(
                "default", "default", "accessLogging: [{providers: [{name: json-log}]}]"
            ),
        },
        lambda: "json.log" in world.listeners(world.client),
        lambda: "json.log" in world.inbound(),
    )
    path = unique_path()
    assert world.call(path) == 200
    lines = wait_lines(world, "json.log", path, 2)
    assert len(lines) == 2, lines
    entries = {e["upstream_cluster"]: e for e in map(json.loads, lines)}
    outbound = entries[REVIEWS_CLUSTER]
    assert outbound["method"] == "GET"
    assert outbound["path"] == path
    assert outbound["response_code"] == 200
    assert outbound["authority"] == "reviews:9080"
    assert set(outbound) >= {"start_time", "duration", "request_id", "upstream_host", "route_name"}
    assert entries[f"inbound|{world.app_port}||"]["response_code"] == 200
    assert world.lines("text.log", path) == []  # the root's provider is overridden


def test_a_telemetry_selecting_the_workload_overrides_its_namespaces(world: World) -> None:
    world.configure(
        {
            "telemetry-root.yaml": ROOT_TEXT,
            "telemetry-ns.yaml": telemetry(
                "default", "default", "accessLogging: [{providers: [{name: json-log}]}]"
            ),
            "telemetry-reviews.yaml": telemetry(
                "reviews",
                "default",
                "accessLogging: [{providers: [{name: text-log}]}]",
                selector="selector: {matchLabels: {app: reviews}}",
            ),
        },
        lambda: "json.log" in world.listeners(world.client),
        lambda: "text.log" in world.inbound() and "json.log" not in world.inbound(),
    )
    path = unique_path()
    assert world.call(path) == 200
    [text] = wait_lines(world, "text.log", path, 1)
    assert (
        text_fields(text)[15] == f"inbound|{world.app_port}||"
    )  # reviews logs as its own Telemetry says
    [entry] = [json.loads(line) for line in wait_lines(world, "json.log", path, 1)]
    assert entry["upstream_cluster"] == REVIEWS_CLUSTER  # the client keeps the namespace's


def test_client_mode_logs_only_on_the_outbound_side(world: World) -> None:
    world.configure(
        {
            "telemetry-root.yaml": telemetry(
                "mesh-default",
                "istio-system",
                "accessLogging: [{providers: [{name: text-log}], match: {mode: CLIENT}}]",
            )
        },
        lambda: "text.log" in world.listeners(world.client),
        lambda: "text.log" not in world.inbound(),
    )
    path = unique_path()
    assert world.call(path) == 200
    [line] = wait_lines(world, "text.log", path, 1)
    assert text_fields(line)[15] == REVIEWS_CLUSTER
    assert world.call(path) == 200
    assert len(wait_lines(world, "text.log", path, 2)) == 2  # still one line per request


def test_disabled_for_the_server_side_keeps_the_roots_provider_on_the_client_side(
    world: World,
) -> None:
    world.configure(
        {
            "telemetry-root.yaml": ROOT_TEXT,
            "telemetry-ns.yaml": telemetry(
                "default",
                "default",
                "accessLogging: [{disabled: true, match: {mode: SERVER}}]",
            ),
        },
        lambda: "text.log" in world.listeners(world.client),
        lambda: "text.log" not in world.inbound(),
    )
    path = unique_path()
    assert world.call(path) == 200
    [line] = wait_lines(world, "text.log", path, 1)
    assert text_fields(line)[15] == REVIEWS_CLUSTER  # the client's line; reviews logs nothing
    time.sleep(0.5)
    assert len(world.lines("text.log", path)) == 1


def tracing(percentage: float) -> str:
    return telemetry(
        "mesh-default",
        "istio-system",
        "tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: "
        f"{percentage}, customTags: {{team: {{literal: {{value: bookinfo}}}}}}}}]",
    )


def test_a_sampled_request_reaches_the_zipkin_collector_as_spans_from_both_sidecars(
    world: World,
) -> None:
    world.configure(
        {"telemetry-root.yaml": tracing(100)},
        lambda: "envoy.tracers.zipkin" in world.listeners(world.client),
        lambda: "envoy.tracers.zipkin" in world.inbound(),
    )
    paths = [unique_path() for _ in range(5)]  # Envoy's Zipkin reporter flushes every 5 spans
    for path in paths:
        assert world.call(path) == 200
    assert wait_until(lambda: len(world.collector.spans_for(paths[0])) >= 2, timeout=15)
    spans = world.collector.spans_for(paths[0])
    assert {s["kind"] for s in spans} == {"CLIENT", "SERVER"}
    assert len({s["traceId"] for s in spans}) == 1  # one trace across both hops
    for span in spans:
        assert span["tags"]["team"] == "bookinfo"  # the custom literal tag
        assert span["tags"]["istio.namespace"] == "default"


def test_zero_percent_sampling_sends_no_span(world: World) -> None:
    world.configure(
        {"telemetry-root.yaml": tracing(0)},
        lambda: samplings(world.listeners(world.client)) == [0.0],
        lambda: samplings(world.inbound()) == [0.0],
    )
    unsampled = [unique_path() for _ in range(5)]
    for path in unsampled:
        assert world.call(path) == 200
    # Spans are reported in order: once later, sampled requests arrive, any span of the
    # unsampled ones would have been sent before them.
    world.configure(
        {"telemetry-root.yaml": tracing(100)},
        lambda: samplings(world.listeners(world.client)) == [100.0],
        lambda: samplings(world.inbound()) == [100.0],
    )
    sampled = [unique_path() for _ in range(5)]
    for path in sampled:
        assert world.call(path) == 200
    assert wait_until(lambda: len(world.collector.spans_for(sampled[0])) >= 2, timeout=15)
    assert all(world.collector.spans_for(path) == [] for path in unsampled)


def test_without_telemetry_the_mesh_access_log_file_logs_in_its_encoding(world: World) -> None:
    mesh_log = world.logs / "mesh.log"
    world.mesh.write(
        "mesh.yaml",
        mesh_yaml(world.logs).rstrip()
        + f"\n    accessLogFile: {mesh_log}\n    accessLogEncoding: JSON\n",
    )
    try:
        world.configure(
            {},
            lambda: "mesh.log" in world.listeners(world.client),
            lambda: "mesh.log" in world.inbound(),
        )
        path = unique_path()
        assert world.call(path) == 200
        entries = [json.loads(line) for line in wait_lines(world, "mesh.log", path, 2)]
        assert sorted(e["upstream_cluster"] for e in entries) == sorted(
            [REVIEWS_CLUSTER, f"inbound|{world.app_port}||"]
        )
        assert all(e["method"] == "GET" and e["response_code"] == 200 for e in entries)
    finally:
        world.mesh.write("mesh.yaml", mesh_yaml(world.logs))
