"""What a sidecar costs: the latency it adds per hop and the memory of one Envoy in a large mesh.

Latency: the same HTTP server is called directly (client -> server) and through two real
Envoy sidecars configured by this control plane (client -> client sidecar -> server sidecar ->
server), at a fixed request rate for a bounded number of requests, one keep-alive connection,
in interleaved rounds so the machine's noise falls on every row alike. Rows: the sidecars in
plaintext and with mutual TLS (the mesh CA and automatic mTLS, Istio's default between
sidecars), each with telemetry off and, when the control plane has it, on (an access log line
per request and a trace span per request to a Zipkin collector written here). The added
latency per hop is (sidecars - direct) / 2: the client sidecar's outbound and the server
sidecar's inbound traversal.

Local mode (each sidecar listens on its own loopback address; the client calls the client
sidecar's outbound port): transparent interception needs iptables and a network namespace per
pod, which this script does not set up, so the kernel's redirect is not in the figures.

Memory: a real Envoy as the transparent sidecar of a pod in ``ns-0`` of the 1,000-service
mesh (``bench/registry.py``, the mesh ``bench/sidecar_scope.py`` compiles), connected to the
control plane serving it, without and with a Sidecar resource importing ``./*`` and
``istio-system/*``; and an Envoy of an empty mesh as the floor. Read once all four types are
ACKed and the numbers settle: RSS (``/proc/<pid>/status``) and the admin API's ``/memory``
(``allocated``, ``heap_size``).

Everything runs in a private network namespace (``unshare --net``, root only): the sidecars'
fixed ports (15001, 15006, 80) and the loopback addresses cannot collide with anything else on
the machine. Writes JSON to ``bench/results/hop-overhead-<time>.json`` and prints a summary.

    .venv/bin/python -m bench.hop_overhead [--rate 200] [--requests 2000] [--rounds 3]
    .venv/bin/python -m bench.hop_overhead --no-memory --rounds 1      # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bench.registry import Registry
from controlplane.app import obtain_token
from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port

RESULTS = Path(__file__).resolve().parent / "results"
# The application's address; each mesh's server sidecar listens on a pod address of its own
# (127.0.20.10, .11, ...): two Envoys on one address and port would share the connections
# (SO_REUSEPORT), and each mesh's figures would mix with the others'.
APP = "127.0.20.110"
CLIENT_POD = "127.0.20.1"
CLIENT = f"sidecar~{CLIENT_POD}~client.default~default.svc.cluster.local"
MEMORY_NODE = "sidecar~10.200.0.1~bench-1.ns-0~ns-0.svc.cluster.local"
SIDECAR_SCOPE = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: ns-0}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
"""


def echo_yaml(target_port: int, pod: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 9080, targetPort: {target_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-1, namespace: default, labels: {{app: echo}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: {pod}}}
"""


# ---- the application and the load --------------------------------------------------------------------------------------


def start_server(address: str, port: int) -> subprocess.Popen[bytes]:
    """The application: the test harness's HTTP backend in a process of its own, so the
    direct call crosses processes as the sidecars' path does."""
    code = (
        "import sys, time\n"
        "from controlplane.testing.backends import Backend\n"
        f"Backend('echo', {address!r}, {port}).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(1e9)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    return process


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 4)}


def paced_requests(
    host: str, port: int, host_header: str, rate: float, count: int
) -> dict[str, Any]:
    """``count`` GETs at ``rate`` per second on one keep-alive connection; each latency is
    from the moment the request is written to the end of the response body (ms). A request
    that is due while the previous one is still out is sent right after it (counted as late)."""
    latencies: list[float] = []
    late = errors = 0
    conn = http.client.HTTPConnection(host, port, timeout=10)
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        due = start + i * interval
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        elif now - due > interval:
            late += 1
        sent = time.perf_counter()
        try:
            conn.request("GET", "/bench", headers={"Host": host_header})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
            continue
        latencies.append((time.perf_counter() - sent) * 1000)
    conn.close()
    return {
        "requests": count,
        "errors": errors,
        "late": late,
        "latency_ms": percentiles(latencies),
        "seconds": round(time.perf_counter() - start, 2),
    }


# ---- telemetry --------------------------------------------------------------------------------


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """A request body, with a Content-Length or chunked (as Envoy's tracer sends it)."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


class ZipkinCollector:
    """Accepts Zipkin v2 span posts (``/api/v2/spans``) and counts the spans."""

    def __init__(self, address: str) -> None:
        self.spans = 0
        lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = _read_body(self)
                try:
                    found = len(json.loads(body or b"[]"))
                except ValueError:
                    found = 0
                with lock:
                    collector.spans += found
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


ZIPKIN_POD = "127.0.20.200"


def zipkin_yaml(port: int) -> str:
    """The collector as a service of the registry (the tracer's cluster is its outbound one)."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: zipkin, namespace: istio-system}}
spec:
  selector: {{app: zipkin}}
  ports: [{{name: http-zipkin, port: 9411, targetPort: {port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: zipkin-1, namespace: istio-system, labels: {{app: zipkin}}}}
status: {{podIP: {ZIPKIN_POD}}}
"""


def telemetry_mesh_config(access_log: Path) -> str:
    """Istio's mesh-wide switches: ``accessLogFile`` (Istio's default text format) and
    ``enableTracing`` with ``defaultConfig.tracing`` (Zipkin at the registry's collector, 100%
    sampling, so every request makes a span)."""
    return yaml.safe_dump(
        {
            "accessLogFile": str(access_log),
            "enableTracing": True,
            "defaultConfig": {
                "tracing": {
                    "sampling": 100.0,
                    "zipkin": {"address": "zipkin.istio-system:9411"},
                }
            },
        },
        sort_keys=False,
    )


def telemetry_compiled(sidecar: Sidecar) -> bool:
    """Whether this control plane put an access log and a tracer into the sidecar's config."""
    dump = sidecar.envoy.admin("/config_dump", timeout=10)  # the bootstrap lists extensions
    return (
        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog" in dump
        and "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig" in dump
    )


# ---- the latency meshes -----------------------------------------------------------------------


@dataclass
class HopMesh:
    name: str
    mesh: LocalMesh
    client: Sidecar
    server: Sidecar
    telemetry: bool


def start_hop_mesh(
    workdir: Path,
    name: str,
    mtls: bool,
    target_port: int,
    zipkin_port: int,
    mesh_yaml: str | None,
    pod: str,
) -> HopMesh:
    ca_dir = workdir / "ca"
    mesh = LocalMesh(workdir, ["--ca-dir", str(ca_dir)] if mtls else None)
    mesh.write("echo.yaml", echo_yaml(target_port, pod))
    mesh.write("zipkin.yaml", zipkin_yaml(zipkin_port))
    if mesh_yaml is not None:
        mesh.write("mesh.yaml", mesh_yaml)
    mesh.control_plane.start(timeout=120)  # a loaded machine starts slowly

    def credentials(account: str) -> dict[str, Any]:
        return {"xds_token": obtain_token(ca_dir, "default", account)} if mtls else {}

    server = mesh.sidecar(
        f"sidecar~{pod}~echo-1.default~default.svc.cluster.local",
        labels={"app": "echo"},
        service_account="echo",
        app_address=APP,
        **credentials("echo"),
    )
    client = mesh.sidecar(
        CLIENT, labels={"app": "client"}, service_account="client", **credentials("client")
    )
    types = ("cds", "eds", "lds", "rds", "sds") if mtls else ("cds", "eds", "lds", "rds")
    for sidecar in (server, client):
        mesh.debug.wait_synced(sidecar.node_id, types=types, timeout=60)
    return HopMesh(name, mesh, client, server, mesh_yaml is not None)


def measure_latency(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    target_port = free_port(APP)
    server = start_server(APP, target_port)
    collector = ZipkinCollector(ZIPKIN_POD)
    access_log = workdir / "access.log"
    telemetry_yaml = telemetry_mesh_config(access_log)
    meshes: list[HopMesh] = []
    telemetry = "on and off"
    started = 0  # meshes started so far: each gets its own pod address
    try:
        for label, mtls in (("plaintext", False), ("mtls", True)):
            for on in (False, True):
                name = f"{label}{'+telemetry' if on else ''}"
                hop = start_hop_mesh(
                    workdir / name, name, mtls, target_port, collector.port,
                    telemetry_yaml if on else None, f"127.0.20.{10 + started}",
                )  # fmt: skip
                meshes.append(hop)
                started += 1
                if on and not telemetry_compiled(hop.client):
                    hop.mesh.stop()  # this build compiles neither: report the "off" rows only
                    meshes.remove(hop)
                    telemetry = "off only (this build compiles no access log or tracer)"
        # Warm-up: connections pooled, certificates loaded, Python's first-call costs paid.
        paced_requests(APP, target_port, "echo", args.rate, 100)
        for hop in meshes:
            paced_requests("127.0.0.1", hop.client.outbound_port, "echo:9080", args.rate, 100)
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            row: dict[str, Any] = {
                "direct": paced_requests(APP, target_port, "echo", args.rate, args.requests)
            }
            for hop in meshes:
                before = _envoy_cpu(hop)
                inbound = _inbound_requests(hop, target_port)
                row[hop.name] = paced_requests(
                    "127.0.0.1", hop.client.outbound_port, "echo:9080", args.rate, args.requests
                )
                after = _envoy_cpu(hop)
                # Every request went through both sidecars (the server's inbound counted it).
                row[hop.name]["server_sidecar_requests"] = (
                    _inbound_requests(hop, target_port) - inbound
                )
                row[hop.name]["envoy_cpu_us_per_request"] = {
                    side: round((after[side] - before[side]) / args.requests * 1e6, 1)
                    for side in after
                }
            rounds.append(row)
            print(f"round {index + 1}/{args.rounds}: " + ", ".join(
                f"{k} p50 {v['latency_ms']['p50']} ms" for k, v in row.items()
            ), flush=True)  # fmt: skip
        telemetry_seen = {
            "access_log_lines": _lines(access_log),
            "zipkin_spans": collector.spans,
        }
        return {
            "rate_per_s": args.rate,
            "requests_per_run": args.requests,
            "rounds": rounds,
            "summary": _summarise(rounds),
            "telemetry": telemetry,
            "telemetry_seen": telemetry_seen,
            "envoy_concurrency": 1,
            "mode": "local (no iptables redirect)",
        }
    finally:
        for hop in meshes:
            hop.mesh.stop()
        server.terminate()
        server.wait(timeout=10)
        collector.stop()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _envoy_cpu(hop: HopMesh) -> dict[str, float]:
    """CPU time of the two sidecars: what each hop costs in work, which a loaded machine's
    scheduling delays (in the latency figures) do not change."""
    out = {}
    for side, sidecar in (("client_sidecar", hop.client), ("server_sidecar", hop.server)):
        assert sidecar.envoy.process is not None
        out[side] = _cpu_seconds(sidecar.envoy.process.pid)
    return out


def _inbound_requests(hop: HopMesh, port: int) -> int:
    return hop.server.envoy.stat(f"cluster.inbound|{port}||.upstream_rq_total")


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row, the median over rounds of each percentile, and the added latency per hop."""
    out: dict[str, Any] = {}
    for name in rounds[0]:
        out[name] = {
            q: sorted(r[name]["latency_ms"][q] for r in rounds)[len(rounds) // 2]
            for q in ("p50", "p90", "p99")
        }
    direct = out["direct"]
    for name, row in out.items():
        if name != "direct":
            row["added_per_hop_ms"] = {
                q: round((row[q] - direct[q]) / 2, 4) for q in ("p50", "p90", "p99")
            }
            row["envoy_cpu_us_per_request"] = {
                side: sorted(r[name]["envoy_cpu_us_per_request"][side] for r in rounds)[
                    len(rounds) // 2
                ]
                for side in ("client_sidecar", "server_sidecar")
            }
    return out


# ---- memory -----------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _settled_memory(envoy: EnvoyProcess, seconds: float = 3.0) -> dict[str, Any]:
    """RSS and Envoy's own allocator figures, once RSS has stopped growing."""
    assert envoy.process is not None
    last, deadline = -1, time.time() + 30
    while time.time() < deadline:
        time.sleep(seconds)
        now = _rss_kb(envoy.process.pid)
        if abs(now - last) < 512:
            break
        last = now
    memory = envoy.admin_json("/memory")
    return {
        "rss_mb": round(_rss_kb(envoy.process.pid) / 1024, 1),
        "allocated_mb": round(int(memory["allocated"]) / 2**20, 1),
        "heap_size_mb": round(int(memory["heap_size"]) / 2**20, 1),
    }


def _memory_envoy(
    mesh: LocalMesh, name: str, with_routes: bool
) -> tuple[EnvoyProcess, dict[str, Any]]:
    bootstrap = render_bootstrap(
        node_id=MEMORY_NODE,
        namespace="ns-0",
        labels={"app": "bench"},
        service_account="bench",
        xds_port=mesh.xds_port,
        admin_port=free_port(),
        workload_name="bench-1",
        instance_ips="10.200.0.1",
    )
    envoy = EnvoyProcess(bootstrap, mesh.workdir, name=name).start()
    started = time.time()
    # An empty mesh has no HTTP port, so no route configuration to ask for.
    types = ("cds", "eds", "lds", "rds") if with_routes else ("cds", "lds")
    mesh.debug.wait_synced(MEMORY_NODE, types=types, timeout=180)
    synced = time.time() - started
    envoy.wait_live(timeout=60)
    counts = {
        "clusters": envoy.stat("cluster_manager.active_clusters"),
        "listeners": envoy.stat("listener_manager.total_listeners_active"),
    }
    return envoy, {"synced_s": round(synced, 2), **counts}


def measure_memory(workdir: Path, services: int) -> dict[str, Any]:
    out: dict[str, Any] = {"services": services, "node": MEMORY_NODE}
    for label, registry_size, scoped in (
        ("empty_mesh", 0, False),
        ("no_sidecar_scope", services, False),
        ("sidecar_scope", services, True),
    ):
        mesh = LocalMesh(workdir / label)
        if registry_size:
            Registry(services=registry_size).write(mesh.config_dir)
        if scoped:
            mesh.write("sidecar.yaml", SIDECAR_SCOPE)
        mesh.control_plane.start(timeout=300)  # 1,000 services, on a loaded machine
        try:
            envoy, facts = _memory_envoy(mesh, f"envoy-{label}", registry_size > 0)
            try:
                out[label] = {**facts, **_settled_memory(envoy)}
            finally:
                envoy.stop()
        finally:
            mesh.stop()
        print(f"memory {label}: {out[label]}", flush=True)
    return out


# ---- running in a private network namespace ---------------------------------------------------


def _in_private_netns() -> bool:
    return os.environ.get("HOP_OVERHEAD_NETNS") == "1"


def _reexec_in_netns(argv: list[str]) -> int | None:
    """Run this script again in a new network namespace with its loopback up; its exit code,
    or None when that is not possible here (not root, no unshare)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        print("hop_overhead: not root (or no unshare): running in the host's network",
              file=sys.stderr)  # fmt: skip
        return None
    python = [sys.executable, "-m", "bench.hop_overhead", *argv]
    command = "ip link set lo up && exec " + " ".join(shlex.quote(a) for a in python)
    env = dict(os.environ, HOP_OVERHEAD_NETNS="1")
    code = subprocess.call([unshare, "--net", "sh", "-c", command], env=env)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def _load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)], "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--services", type=int, default=1000, help="memory: mesh size")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--host-network", action="store_true", help="no private netns")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.host_network and not _in_private_netns():
        code = _reexec_in_netns(argv)
        if code is not None:
            return code
    workdir = Path(tempfile.mkdtemp(prefix="hop-overhead-"))
    result: dict[str, Any] = {
        "command": "python -m bench.hop_overhead " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_before": _load(),
        "private_netns": _in_private_netns(),
    }
    if not args.no_latency:
        result["latency"] = measure_latency(args, workdir)
    if not args.no_memory:
        result["memory"] = measure_memory(workdir, args.services)
    result["load_after"] = _load()
    RESULTS.mkdir(exist_ok=True)
    output = args.output or RESULTS / f"hop-overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in result if k != "latency"} | {
        "latency_summary": result.get("latency", {}).get("summary")
    }, indent=2))  # fmt: skip
    print(f"written to {output}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
