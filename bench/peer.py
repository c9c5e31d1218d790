"""`make bench-istiod`: this control plane and istiod side by side, against the same real
kube-apiserver and the same simulated proxies; both into one JSON under bench/results/.

    python -m bench.peer [--n 1000] [--services N] [--proxies N] [--rounds 2]
                         [--peers self,istiod] [--canary-repeats 5] [--istiod-env K=V ...]

One LocalCluster (etcd + kube-apiserver, tests/cluster) is filled once with the shape of
bench/registry.py as Kubernetes objects: ``--services`` Services (port 80 ``http``, target
8080) in 10 namespaces, 3 Pods each with IPs (status written as a kubelet would), one
EndpointSlice per Service naming those Pods, and for the first ``--rules`` Services a
DestinationRule (subsets v1/v2) and a VirtualService (90/10). Then, alternating (self,
istiod, self, istiod ...), one control plane at a time runs against it:

* cold start: from the process's start until one proxy (a Delta ADS probe, retrying every
  50 ms) holds a complete configuration: a cluster, endpoints and a virtual host for every
  Service;
* RSS before proxies (the probe gone, 3 s later), then a connect storm of ``--proxies``
  simulated sidecars (bench/loadgen.py, Delta, plaintext), all ACKed; RSS connected;
* canary: ``kubectl patch`` of svc-0's VirtualService weights -> every proxy's RDS
  response, ``--canary-repeats`` shifts 3 s apart; CPU seconds of each phase.

istiod is `pilot-discovery` built by bench/istiod/build.sh (pinned there, cached outside the
repo), run outside the cluster with --kubeconfig, its CA, webhooks, injection and 15012 off,
its xDS on the plaintext port; ours is `controlplane run` (cluster mode) without webhooks or
mesh CA. The `summary` of the JSON has the median of each figure per peer and the ratio
self/istiod. bench/README.md says what is and is not equal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from bench.loadgen import worker_main
from bench.registry import Registry
from bench.run import Sampler, cpu_seconds, percentiles, rss_bytes
from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import (
    AdsConnection,
    delta_request,
    listener_route_names,
    node,
)
from controlplane.testing.ports import free_port

REPO = Path(__file__).resolve().parents[1]
BUILD_SH = REPO / "bench" / "istiod" / "build.sh"
RESULTS = REPO / "bench" / "results"
ISTIO_NAMESPACE = "istio-system"
# What an injected sidecar's node metadata carries that either control plane reads: istiod
# parses ISTIO_VERSION (its own release, so that no version-gated feature differs), takes the
# cluster from CLUSTER_ID and the config namespace from NAMESPACE; REDIRECT is a sidecar's
# interception. The same metadata goes to both control planes.
PROXY_METADATA: dict[str, Any] = {
    "NAMESPACE": "ns-0",
    "ISTIO_VERSION": "1.31.0",
    "CLUSTER_ID": "Kubernetes",
    "MESH_ID": "cluster.local",
    "INTERCEPTION_MODE": "REDIRECT",
    "SERVICE_ACCOUNT": "default",
    "LABELS": {"app": "bench"},
}
# The mesh config both read: the `istio` ConfigMap of istio-system, key `mesh`.
MESH_CONFIG = "trustDomain: cluster.local\nrootNamespace: istio-system\n"
# istiod's settings for a fair run (see bench/README.md): no CA (the proxies speak plaintext
# to 15010), no injection or validation webhooks, no webhook-configuration patching.
ISTIOD_ENV = {
    "POD_NAMESPACE": ISTIO_NAMESPACE,
    "POD_NAME": "istiod-bench",
    "ENABLE_CA_SERVER": "false",
    "PILOT_CERT_PROVIDER": "none",
    "INJECT_ENABLED": "false",
    "VALIDATION_WEBHOOK_CONFIG_NAME": "",
}
# Its limits, recorded with their defaults (the environment overrides them; 2 cores).
ISTIOD_LIMITS = {
    "PILOT_PUSH_THROTTLE": "0 (auto: min(15 + 5 * GOMAXPROCS, 100) concurrent pushes)",
    "PILOT_MAX_REQUESTS_PER_SECOND": "0 (auto: min(15 + 5 * GOMAXPROCS, 100) new xDS requests/s)",
    "PILOT_DEBOUNCE_AFTER": "100ms",
    "PILOT_DEBOUNCE_MAX": "10s",
    "kubernetesApiQPS / kubernetesApiBurst": "80 / 160 (flags)",
    "GOMEMLIMIT": "unset (no limit)",
    "GOMAXPROCS": "unset (Go's default: the CPUs available)",
}
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


def istio_pin() -> str:
    """The istio.io/istio version bench/istiod/build.sh builds (the one place it is written)."""
    override = os.environ.get("CONTROLPLANE_ISTIO_VERSION")
    if override:
        return override
    match = re.search(r'CONTROLPLANE_ISTIO_VERSION:-([^}"]+)', BUILD_SH.read_text())
    if not match:
        raise SystemExit(f"no pinned version in {BUILD_SH}")
    return match.group(1)


def build_istiod() -> Path:
    """The cached pilot-discovery, built first if needed (progress on stderr)."""
    proc = subprocess.run(["bash", str(BUILD_SH)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"{BUILD_SH} failed ({proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- filling the apiserver ---------------------------------------------------------------------


class Api:
    """Raw HTTPS to the apiserver as admin, one kept-alive connection per thread."""

    def __init__(self, cluster: Any) -> None:
        self.port = cluster.apiserver_port
        self.context = cluster._ssl_context()
        self.local = threading.local()

    def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=60
                )
                self.local.conn = conn
            try:
                headers = {"Content-Type": content_type} if data is not None else {}
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                text = raw.decode("utf-8", "replace")
                try:
                    return response.status, json.loads(text)
                except ValueError:
                    return response.status, text
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def create(self, path: str, body: dict[str, Any]) -> None:
        status, answer = self.call("POST", path, body)
        if status not in (200, 201, 409):
            raise RuntimeError(f"POST {path}: {status} {answer}")


def service_objects(registry: Registry, i: int) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) of Service i: the Service, its Pods, its EndpointSlice."""
    ns, name = registry.namespace(i), registry.name(i)
    out: list[tuple[str, dict[str, Any]]] = [
        (
            f"/api/v1/namespaces/{ns}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            },
        )
    ]
    endpoints = []
    for j in range(registry.pods):
        pod = f"{name}-{j}"
        version = "v2" if j == registry.pods - 1 else "v1"
        out.append(
            (
                f"/api/v1/namespaces/{ns}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": ns,
                        "labels": {"app": name, "version": version},
                    },
                    "spec": {
                        "serviceAccountName": "default",
                        "containers": [
                            {
                                "name": "app",
                                "image": "example.invalid/app:1",
                                "ports": [{"containerPort": 8080}],
                            }
                        ],
                    },
                },
            )
        )
        endpoints.append(
            {
                "addresses": [registry.pod_ip(i, j)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod},
            }
        )
    out.append(
        (
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-bench",
                    "namespace": ns,
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "bench.controlplane.test",
                    },
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
        )
    )
    return out


def pod_status(registry: Registry, i: int, j: int) -> tuple[str, dict[str, Any]]:
    ns, pod = registry.namespace(i), f"{registry.name(i)}-{j}"
    ip = registry.pod_ip(i, j)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (
        f"/api/v1/namespaces/{ns}/pods/{pod}/status",
        {
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ],
            }
        },
    )


def rule_objects(registry: Registry, i: int) -> list[tuple[str, dict[str, Any]]]:
    ns, name = registry.namespace(i), registry.name(i)
    base = f"/apis/networking.istio.io/v1/namespaces/{ns}"
    return [
        (
            f"{base}/destinationrules",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "host": name,
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                    ],
                },
            },
        ),
        (
            f"{base}/virtualservices",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "hosts": [name],
                    "http": [
                        {
                            "route": [
                                {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                                {"destination": {"host": name, "subset": "v2"}, "weight": 10},
                            ]
                        }
                    ],
                },
            },
        ),
    ]


def fill(cluster: Any, registry: Registry, threads: int = 6) -> dict[str, Any]:
    """The registry as Kubernetes objects (and the mesh ConfigMap); counts and seconds."""
    from tests.kube.operator import install_crds

    started = time.time()
    install_crds(cluster)
    crds_seconds = time.time() - started
    api = Api(cluster)
    for ns in [ISTIO_NAMESPACE, *sorted({registry.namespace(i) for i in range(registry.services)})]:
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
        api.create(
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
        )
    api.create(
        f"/api/v1/namespaces/{ISTIO_NAMESPACE}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": ISTIO_NAMESPACE},
            "data": {"mesh": MESH_CONFIG},
        },
    )
    creates = [o for i in range(registry.services) for o in service_objects(registry, i)]
    creates += [
        o for i in range(min(registry.rules, registry.services)) for o in rule_objects(registry, i)
    ]
    statuses = [
        pod_status(registry, i, j) for i in range(registry.services) for j in range(registry.pods)
    ]

    def create(item: tuple[str, dict[str, Any]]) -> None:
        api.create(*item)

    def patch(item: tuple[str, dict[str, Any]]) -> None:
        status, answer = api.call("PATCH", item[0], item[1], "application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {item[0]}: {status} {answer}")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, creates))
        list(pool.map(patch, statuses))
    return {
        "objects_created": len(creates),
        "pod_status_writes": len(statuses),
        "crds_seconds": round(crds_seconds, 1),
        "seconds": round(time.time() - started, 1),
    }


# ---- the two control planes -----------------------------------------------------------------


class Peer:
    """One control-plane process against the cluster (started by ``start``)."""

    name = ""

    def __init__(self, cluster: Any, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.xds_port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready_url(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"argv": self.argv()}

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        from tests.cluster.cluster import _PDEATHSIG

        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.started_at = time.time()
        self.process = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_PDEATHSIG,
        )
        log.close()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url(), timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


class SelfPeer(Peer):
    """`controlplane run` (cluster mode), as tests/kube/operator.py runs it, without webhooks
    or the mesh CA (the proxies speak plaintext and ask for no certificates)."""

    name = "self"

    def __init__(self, cluster: Any, workdir: Path, extra: list[str]) -> None:
        super().__init__(cluster, workdir)
        self.debug_port = free_port()
        self.extra = extra

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "controlplane",
            "run",
            "--kubeconfig",
            self.cluster.kubeconfig,
            "--host",
            "127.0.0.1",
            "--xds-port",
            str(self.xds_port),
            "--debug-port",
            str(self.debug_port),
            "--no-mesh-ca",
            *self.extra,
        ]

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONUNBUFFERED="1")

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}/ready"


class IstiodPeer(Peer):
    """istiod's pilot-discovery outside the cluster (--kubeconfig), xDS on its plaintext port."""

    name = "istiod"

    def __init__(
        self, cluster: Any, workdir: Path, binary: Path, env_overrides: dict[str, str]
    ) -> None:
        super().__init__(cluster, workdir)
        self.binary = binary
        self.http_port = free_port()
        self.monitoring_port = free_port()
        self.env_overrides = env_overrides

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "discovery",
            "--kubeconfig",
            self.cluster.kubeconfig,
            "--namespace",
            ISTIO_NAMESPACE,
            "--clusterID",
            "Kubernetes",
            "--domain",
            "cluster.local",
            # No mesh file: the mesh config comes from the istio ConfigMap, as ours does.
            "--meshConfig",
            str(self.workdir / "no-mesh-file"),
            "--networksConfig",
            str(self.workdir / "no-networks-file"),
            "--grpcAddr",
            f"127.0.0.1:{self.xds_port}",
            "--httpAddr",
            f"127.0.0.1:{self.http_port}",
            "--monitoringAddr",
            f"127.0.0.1:{self.monitoring_port}",
            "--httpsAddr",
            "",
            "--secureGRPCAddr",
            "",
            "--shutdownDuration",
            "1s",
        ]

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        return {**base, **ISTIOD_ENV, **self.env_overrides}

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ready"

    def describe(self) -> dict[str, Any]:
        return {
            "argv": self.argv(),
            "env": {**ISTIOD_ENV, **self.env_overrides},
            "limits": {
                **ISTIOD_LIMITS,
                **{k: f"{v} (set)" for k, v in self.env_overrides.items()},
            },
        }


# ---- the cold-start probe ---------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _follow(
    conn: AdsConnection,
    registry: Registry,
    node_id: str,
    metadata: dict[str, Any],
    started: float,
    deadline: float,
    marks: dict[str, float],
) -> bool:
    """Subscribe like a sidecar; True once every Service has a cluster, endpoints and a
    virtual host. ``marks`` gets the seconds since ``started`` of each milestone."""
    hosts = {registry.host(i) for i in range(registry.services)}
    want = {f"outbound|80||{h}" for h in hosts}
    clusters: set[str] = set()
    eds: set[str] = set()
    endpoints: dict[str, int] = {}
    routes: set[str] = set()
    route_hosts: dict[str, set[str]] = {}
    await conn.send(delta_request(CLUSTER, node_message=node(node_id, metadata)))
    await conn.send(delta_request(LISTENER))

    def mark(what: str) -> None:
        marks.setdefault(what, round(time.time() - started, 3))

    while True:
        response = await conn.recv(max(0.1, deadline - time.time()))
        mark("first_response")
        type_url = response.type_url
        follow: tuple[str, list[str]] | None = None
        if type_url == CLUSTER:
            clusters.update(r.name for r in response.resources)
            clusters.difference_update(response.removed_resources)
            new = [r.name for r in response.resources if r.name.startswith("outbound|")]
            new = [n for n in new if n not in eds]
            if new:
                eds.update(new)
                follow = (ENDPOINT, new)
        elif type_url == ENDPOINT:
            for r in response.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                r.resource.Unpack(cla)
                endpoints[r.name] = sum(len(g.lb_endpoints) for g in cla.endpoints)
            for name in response.removed_resources:
                endpoints.pop(name, None)
        elif type_url == LISTENER:
            names = [n for n in listener_route_names([r.resource for r in response.resources])]
            new = [n for n in names if n not in routes]
            if new:
                routes.update(new)
                follow = (ROUTE, new)
        elif type_url == ROUTE:
            for r in response.resources:
                config = route_pb2.RouteConfiguration()
                r.resource.Unpack(config)
                route_hosts[r.name] = {d for vh in config.virtual_hosts for d in vh.domains}
        await conn.send(delta_request(type_url, nonce=response.nonce))
        if follow is not None:
            await conn.send(delta_request(follow[0], follow[1]))
        if want <= clusters:
            mark("all_clusters")
        if all(endpoints.get(c, 0) > 0 for c in want):
            mark("all_endpoints")
        served = set().union(*route_hosts.values()) if route_hosts else set()
        if hosts <= served:
            mark("all_routes")
        if all(m in marks for m in ("all_clusters", "all_endpoints", "all_routes")):
            return True


async def cold_start_probe(
    peer: Peer, registry: Registry, metadata: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Seconds from the process's start until one proxy holds every Service's configuration."""
    started = peer.started_at
    deadline = started + timeout
    node_id = "sidecar~10.250.0.1~probe.ns-0~ns-0.svc.cluster.local"
    marks: dict[str, float] = {}
    attempts = 0
    errors: list[str] = []
    while time.time() < deadline:
        if not peer.alive():
            raise RuntimeError(f"{peer.name} exited:\n{peer.log_tail()}")
        if not _port_open(peer.xds_port):
            await asyncio.sleep(0.02)
            continue
        marks.setdefault("listening", round(time.time() - started, 3))
        attempts += 1
        conn = AdsConnection(peer.target, delta=True, options=FAST_RECONNECT)
        try:
            await conn.open()
            if await _follow(conn, registry, node_id, metadata, started, deadline, marks):
                break
        except (EOFError, TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            await conn.close()
        await asyncio.sleep(0.05)
    complete = all(m in marks for m in ("all_clusters", "all_endpoints", "all_routes"))
    return {
        "seconds": max(marks["all_clusters"], marks["all_endpoints"], marks["all_routes"])
        if complete
        else None,
        "timed_out": not complete,
        "marks": marks,
        "stream_attempts": attempts,
        "errors": errors,
    }


# ---- one round ------------------------------------------------------------------------------


class Load:
    """The load-generator processes (bench/loadgen.py), fresh for each round."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.workers: list[tuple[Any, Any]] = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(child,), daemon=True)
            process.start()
            self.workers.append((process, parent))
        self.watch_ids = 0

    def ask(self, command: str, args: dict[str, Any] | None = None) -> list[Any]:
        for _, pipe in self.workers:
            pipe.send((command, args or {}))
        out = []
        for _, pipe in self.workers:
            if not pipe.poll(120):
                raise TimeoutError(f"worker did not answer {command}")
            out.append(pipe.recv())
        return out

    def cpu(self) -> float:
        total = 0.0
        for process, _ in self.workers:
            with contextlib.suppress(OSError):
                total += cpu_seconds(process.pid)
        return total

    def received_bytes(self) -> int:
        return sum(int(s["received_bytes"]) for s in self.ask("status"))

    def stop(self) -> dict[str, Any]:
        final: dict[str, Any] = {}
        try:
            statuses = self.ask("stop")
            final["errors"] = sum(s["error_count"] for s in statuses)
            final["disconnects"] = sum(s["disconnects"] for s in statuses)
            final["error_samples"] = [e for s in statuses for e in s["errors"]][:5]
        except (TimeoutError, OSError, EOFError) as exc:
            final["stop_error"] = str(exc)
        for process, _ in self.workers:
            process.join(10)
            if process.is_alive():
                process.kill()
        return final


class Round:
    def __init__(self, args: argparse.Namespace, peer: Peer, registry: Registry) -> None:
        self.args = args
        self.peer = peer
        self.registry = registry

    def node_ids(self, count: int) -> list[str]:
        return [
            f"sidecar~10.200.{(i >> 8) & 255}.{i & 255}~bench-{i}.ns-0~ns-0.svc.cluster.local"
            for i in range(count)
        ]

    def account(self) -> tuple[float, float, int, float]:
        return (
            time.time(),
            cpu_seconds(self.peer.pid),
            self.load.received_bytes(),
            self.load.cpu(),
        )

    def settle(self, mark: tuple[float, float, int, float]) -> dict[str, Any]:
        wall = time.time() - mark[0]
        cpu = cpu_seconds(self.peer.pid) - mark[1]
        return {
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
            "peak_rss_mb": round(self.sampler.peak / 2**20, 1),
            "rss_mb": round(rss_bytes(self.peer.pid) / 2**20, 1),
            "bytes_received_by_proxies": self.load.received_bytes() - mark[2],
            "load_generator_cpu_seconds": round(self.load.cpu() - mark[3], 3),
        }

    def run(self) -> dict[str, Any]:
        args = self.args
        self.load = Load(args.workers)  # spawned before the control plane: not in its start
        self.load.ask("status")
        result: dict[str, Any] = {"peer": self.peer.name, "load_average_before": load_average()}
        try:
            self.peer.start()
            self.sampler = Sampler(self.peer.pid)
            self.sampler.start()
            ready_at: list[float] = []
            threading.Thread(target=self._watch_ready, args=(ready_at,), daemon=True).start()
            cold = asyncio.run(
                cold_start_probe(self.peer, self.registry, PROXY_METADATA, args.start_timeout)
            )
            cold["cpu_seconds"] = round(cpu_seconds(self.peer.pid), 3)
            cold["peak_rss_mb"] = round(self.sampler.peak / 2**20, 1)
            result["cold_start"] = cold
            if cold["timed_out"]:
                result["log_tail"] = self.peer.log_tail()
                return result
            time.sleep(3)
            result["cold_start"]["ready_seconds"] = ready_at[0] if ready_at else None
            result["rss_before_proxies_mb"] = round(rss_bytes(self.peer.pid) / 2**20, 1)
            result["storm"] = self.storm()
            time.sleep(3)
            result["rss_connected_mb"] = round(rss_bytes(self.peer.pid) / 2**20, 1)
            result["rss_per_proxy_kb"] = round(
                (result["rss_connected_mb"] - result["rss_before_proxies_mb"])
                * 1024
                / max(1, args.proxies),
                1,
            )
            if not result["storm"]["timed_out"]:
                result["canary"] = self.canaries(args.canary_repeats)
            result["rss_end_mb"] = round(rss_bytes(self.peer.pid) / 2**20, 1)
        finally:
            result["load"] = self.load.stop()
            self.sampler.running = False
            errors = [
                line
                for line in self.peer.log_tail(1000000).splitlines()
                if re.search(r"\bERROR\b|\berror\b\t|Traceback|panic:", line)
            ]
            result["log_error_lines"] = len(errors)
            result["log_errors"] = errors[:8]
            self.peer.stop()
            result["load_average_after"] = load_average()
        return result

    def _watch_ready(self, out: list[float]) -> None:
        while self.peer.alive() and time.time() - self.peer.started_at < self.args.start_timeout:
            if self.peer.ready():
                out.append(round(time.time() - self.peer.started_at, 3))
                return
            time.sleep(0.05)

    def storm(self) -> dict[str, Any]:
        mark = self.account()
        self.sampler.mark()
        ids = self.node_ids(self.args.proxies)
        per = [ids[i :: len(self.load.workers)] for i in range(len(self.load.workers))]
        started = time.time()
        for (_, pipe), chunk in zip(self.load.workers, per, strict=True):
            pipe.send(
                (
                    "start",
                    {
                        "target": self.peer.target,
                        "node_ids": chunk,
                        "metadata": PROXY_METADATA,
                        "delta": True,
                    },
                )
            )
        for _, pipe in self.load.workers:
            pipe.recv()
        deadline = started + self.args.storm_timeout
        statuses: list[dict[str, Any]] = []
        while time.time() < deadline:
            statuses = self.load.ask("status")
            if sum(s["full"] for s in statuses) >= self.args.proxies:
                break
            time.sleep(0.25)
        full = sum(s["full"] for s in statuses)
        last = max((s["last_full_at"] for s in statuses), default=0.0)
        result = {
            "proxies": self.args.proxies,
            "fully_configured": full,
            "timed_out": full < self.args.proxies,
            "seconds_to_all_acked": round(last - started, 3) if full >= self.args.proxies else None,
            "errors": sum(s["error_count"] for s in statuses),
            "disconnects": sum(s["disconnects"] for s in statuses),
        }
        result.update(self.settle(mark))
        return result

    def current_v2_weight(self) -> int:
        ns, name = self.registry.namespace(0), self.registry.name(0)
        found = self.peer.cluster.get_json("virtualservices.networking.istio.io", name, "-n", ns)
        return int(found["spec"]["http"][0]["route"][1]["weight"])

    def canary(self) -> dict[str, Any]:
        # Always a real change: the other weight than the VirtualService has now (an earlier
        # round may have left either).
        v2 = 10 if self.current_v2_weight() == 50 else 50
        self.load.watch_ids += 1
        wid = f"w{self.load.watch_ids}"
        mark = self.account()
        self.sampler.mark()
        before = time.time()
        self.load.ask("watch", {"id": wid, "type_url": ROUTE, "name": None, "since": before})
        patch = [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100 - v2},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": v2},
        ]
        ns, name = self.registry.namespace(0), self.registry.name(0)
        issued = time.time()
        self.peer.cluster.kubectl(
            "patch", "virtualservices.networking.istio.io", name, "-n", ns,
            "--type=json", "-p", json.dumps(patch),
        )  # fmt: skip
        kubectl_seconds = time.time() - issued
        deadline = issued + self.args.converge_timeout
        while time.time() < deadline:
            time.sleep(0.25)
            if sum(r["missing"] for r in self.load.ask("peek", {"id": wid})) == 0:
                break
        latencies: array = array("d")
        missing = 0
        for reply in self.load.ask("collect", {"id": wid}):
            latencies.extend(reply["latencies"])
            missing += reply["missing"]
        result = {
            "change": f"kubectl patch VirtualService {ns}/{name} weights {100 - v2}/{v2}",
            "convergence_seconds": percentiles([x - (issued - before) for x in latencies]),
            "not_converged": missing,
            # kubectl's own run (process start, discovery, the PATCH) is part of every latency.
            "kubectl_seconds": round(kubectl_seconds, 3),
        }
        result.update(self.settle(mark))
        return result

    def canaries(self, repeats: int) -> dict[str, Any]:
        shifts = []
        for i in range(max(1, repeats)):
            if i:
                time.sleep(3)
            shifts.append(self.canary())
        return {"shifts": shifts, **canary_figures(shifts)}


def canary_figures(shifts: list[dict[str, Any]]) -> dict[str, Any]:
    """The median and worst p99 over the shifts that reached proxies; a shift that reached
    none counts in ``not_converged`` (and ``shifts_without_latency``), not in the p99s."""
    reached = [s for s in shifts if "p99" in s["convergence_seconds"]]
    p99s = sorted(s["convergence_seconds"]["p99"] for s in reached)
    return {
        "p99_median": p99s[len(p99s) // 2] if p99s else None,
        "p99_worst": p99s[-1] if p99s else None,
        "shifts_without_latency": len(shifts) - len(reached),
        "cpu_seconds_median": statistics.median(s["cpu_seconds"] for s in reached)
        if reached
        else None,
        "bytes_received_by_proxies_median": statistics.median(
            s["bytes_received_by_proxies"] for s in reached
        )
        if reached
        else None,
        "not_converged": sum(s["not_converged"] for s in shifts),
    }


# ---- summary -------------------------------------------------------------------------------

FIGURES: dict[str, tuple[str, ...]] = {
    "cold_start_seconds": ("cold_start", "seconds"),
    "ready_seconds": ("cold_start", "ready_seconds"),
    "start_cpu_seconds": ("cold_start", "cpu_seconds"),
    "rss_before_proxies_mb": ("rss_before_proxies_mb",),
    "storm_seconds_to_all_acked": ("storm", "seconds_to_all_acked"),
    "storm_cpu_seconds": ("storm", "cpu_seconds"),
    "storm_peak_rss_mb": ("storm", "peak_rss_mb"),
    "storm_bytes_received_by_proxies": ("storm", "bytes_received_by_proxies"),
    "rss_connected_mb": ("rss_connected_mb",),
    "rss_per_proxy_kb": ("rss_per_proxy_kb",),
    "canary_p99_median_seconds": ("canary", "p99_median"),
    "canary_p99_worst_seconds": ("canary", "p99_worst"),
    "canary_cpu_seconds_median": ("canary", "cpu_seconds_median"),
    "canary_bytes_received_by_proxies_median": ("canary", "bytes_received_by_proxies_median"),
}


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def summarize(rounds: list[dict[str, Any]], peers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for figure, path in FIGURES.items():
        row: dict[str, Any] = {}
        for peer in peers:
            values = [v for r in rounds if r["peer"] == peer if (v := _dig(r, path)) is not None]
            row[peer] = {
                "median": round(statistics.median(values), 3) if values else None,
                "each": values,
            }
        if "self" in row and "istiod" in row:
            a, b = row["self"]["median"], row["istiod"]["median"]
            row["ratio_self_to_istiod"] = round(a / b, 3) if a is not None and b else None
        out[figure] = row
    return out


# ---- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="services and proxies (default 1000)")
    parser.add_argument("--services", type=int, default=None, help="default: --n")
    parser.add_argument("--proxies", type=int, default=None, help="default: --n")
    parser.add_argument(
        "--rules", type=int, default=200, help="VirtualService+DestinationRule pairs"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each peer, alternated")
    parser.add_argument("--peers", default="self,istiod", help="which, in order within a round")
    parser.add_argument("--workers", type=int, default=3, help="load-generator processes")
    parser.add_argument("--canary-repeats", type=int, default=5)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--storm-timeout", type=float, default=300.0)
    parser.add_argument("--converge-timeout", type=float, default=60.0)
    parser.add_argument(
        "--istiod-env", action="append", default=[], metavar="K=V", help="extra istiod env"
    )
    parser.add_argument(
        "--self-arg", action="append", default=[], help="extra `controlplane run` argument"
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    args.services = args.services or args.n
    args.proxies = args.proxies or args.n
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - {"self", "istiod"}
    if unknown:
        parser.error(f"unknown peers: {sorted(unknown)}")
    istiod_env = dict(kv.split("=", 1) for kv in args.istiod_env)

    from tests.cluster.cluster import LocalCluster

    record: dict[str, Any] = {
        "command": " ".join(
            ["python -m bench.peer", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average()},
        "sizes": {
            "services": args.services,
            "pods_per_service": 3,
            "virtual_services_and_destination_rules": min(args.rules, args.services),
            "proxies": args.proxies,
            "protocol": "delta",
        },
        "proxy_metadata": PROXY_METADATA,
        "mesh_config": MESH_CONFIG,
    }
    binary: Path | None = None
    if "istiod" in peers:
        binary = build_istiod()
        seconds = binary.parent / ".build_seconds"
        record["istiod"] = {
            "module": f"istio.io/istio@{istio_pin()}",
            "binary": str(binary),
            "build_seconds": int(seconds.read_text()) if seconds.exists() else None,
            "version": subprocess.run(
                [str(binary), "version", "-s"], capture_output=True, text=True, check=False
            ).stdout.strip(),
        }
    registry = Registry(services=args.services, rules=args.rules)
    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    rounds: list[dict[str, Any]] = []
    with LocalCluster() as cluster:
        print(f"cluster up in {cluster.start_seconds:.1f} s; filling ...", flush=True)
        record["fill"] = fill(cluster, registry)
        print(f"filled: {record['fill']}", flush=True)
        for k in range(args.rounds):
            for name in peers:
                peer: Peer
                if name == "istiod":
                    assert binary is not None
                    peer = IstiodPeer(cluster, workdir / f"istiod-{k}", binary, istiod_env)
                else:
                    peer = SelfPeer(cluster, workdir / f"self-{k}", args.self_arg)
                record.setdefault("peers", {})[name] = peer.describe()
                print(f"round {k + 1}/{args.rounds}: {name} ...", flush=True)
                result = Round(args, peer, registry).run()
                result["round"] = k + 1
                rounds.append(result)
                print(json.dumps(_brief(result)), flush=True)
    record["rounds"] = rounds
    record["summary"] = summarize(rounds, peers)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record["machine"]["load_average_at_end"] = load_average()
    out = args.output or RESULTS / (
        f"peer-istiod-{args.services}x{args.proxies}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    for figure, row in record["summary"].items():
        print(
            f"{figure:42s} "
            + "  ".join(f"{p} {row[p]['median']}" for p in peers)
            + (f"  ratio {row.get('ratio_self_to_istiod')}" if len(peers) == 2 else "")
        )
    return 0


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "peer": result["peer"],
        "cold_start_s": _dig(result, ("cold_start", "seconds")),
        "rss_before_mb": result.get("rss_before_proxies_mb"),
        "storm_s": _dig(result, ("storm", "seconds_to_all_acked")),
        "rss_connected_mb": result.get("rss_connected_mb"),
        "canary_p99_s": _dig(result, ("canary", "p99_median")),
        "canary_cpu_s": _dig(result, ("canary", "cpu_seconds_median")),
    }


if __name__ == "__main__":
    raise SystemExit(main())
