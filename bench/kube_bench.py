"""Figures of the Kubernetes operator against a real kube-apiserver (not a test).

    .venv/bin/python bench/kube_bench.py [--services 1000] [--pods 5000] [--samples 20]

Measures, on this machine:
* the test cluster's start time (binaries cached; the uncached build is timed by
  tests/cluster/build.sh, see its log);
* ``kubectl patch`` of a VirtualService -> a real Envoy sidecar ACKs the new routes (RDS),
  median and spread of ``--samples`` patches;
* the resident memory of the operator process (`controlplane run`) once ``--services``
  Services and ``--pods`` Pods (with IPs, five per Service) are in its store and one
  sidecar receives the compiled configuration for all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.testing.ports import free_port  # noqa: E402
from tests.cluster.cluster import LocalCluster  # noqa: E402
from tests.kube.mesh import (  # noqa: E402
    CLIENT_IP,
    IPS,
    destination_rule,
    service_and_pods,
    set_pod_ip,
    start_backends,
    start_sidecar,
    virtual_service,
)
from tests.kube.operator import OperatorProcess, install_crds  # noqa: E402


def measure_latency(cluster: LocalCluster, operator: OperatorProcess, workdir: Path, samples: int):
    ns = cluster.create_namespace()
    port = free_port()
    backends = start_backends(port, IPS)
    cluster.apply(service_and_pods(ns, port, IPS))
    for version, ip in IPS.items():
        set_pod_ip(cluster, ns, f"reviews-{version}", ip)
    set_pod_ip(cluster, ns, "productpage", CLIENT_IP)
    cluster.apply(destination_rule(ns, "v1", "v2"))
    cluster.apply(virtual_service(ns, 50, 50))
    sidecar = start_sidecar(operator, ns, "productpage", CLIENT_IP, {"app": "productpage"}, workdir)
    seconds = []
    try:
        for i in range(samples):
            weight = 10 + (i % 2) * 80
            patch = [
                {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": weight},
                {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100 - weight},
            ]
            before = operator.debug.type_state(sidecar.node_id, "rds")["acked_version"]
            started = time.monotonic()
            cluster.kubectl(
                "patch", "vs", "reviews", "-n", ns, "--type=json", "-p", json.dumps(patch)
            )
            operator.debug.wait_synced(sidecar.node_id, types=("rds",), newer_than={"rds": before})
            seconds.append(time.monotonic() - started)
    finally:
        sidecar.envoy.stop()
        for backend in backends:
            backend.stop()
    return seconds


def load_registry(cluster: LocalCluster, services: int, pods: int) -> str:
    ns = cluster.create_namespace("bench")
    per = max(1, pods // services)
    items = []
    for i in range(services):
        items.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": ns},
            "spec": {"selector": {"app": f"svc-{i}"}, "ports": [{"name": "http", "port": 8080}]},
        })  # fmt: skip
    names = []
    for j in range(pods):
        name = f"pod-{j}"
        names.append(name)
        items.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"app": f"svc-{(j // per) % services}", "version": "v1"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                     "ports": [{"containerPort": 8080}]}]},
        })  # fmt: skip
    for start in range(0, len(items), 500):
        cluster.kubectl(
            "create", "-f", "-", timeout=300,
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start : start + 500]}),
        )  # fmt: skip

    def give_ip(j: int) -> None:
        set_pod_ip(cluster, ns, names[j], f"10.200.{j // 250}.{j % 250 + 1}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(give_ip, range(pods)))
    return ns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kube-bench-"))
    t0 = time.monotonic()
    with LocalCluster() as cluster:
        print(f"cluster start (cached binaries): {cluster.start_seconds:.2f} s", flush=True)
        install_crds(cluster)
        operator = OperatorProcess(cluster, workdir, webhooks=False).start()
        try:
            print(f"operator ready: {time.monotonic() - t0:.1f} s after start", flush=True)
            rss_empty = operator.rss_kib()
            seconds = measure_latency(cluster, operator, workdir, args.samples)
            ms = sorted(s * 1000 for s in seconds)
            print(
                f"kubectl patch -> Envoy RDS ACK over {len(ms)} patches: median "
                f"{statistics.median(ms):.0f} ms, min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms "
                f"(kubectl's own run is part of it)",
                flush=True,
            )
            t1 = time.monotonic()
            load_registry(cluster, args.services, args.pods)
            print(f"created {args.services} Services and {args.pods} Pods with IPs in "
                  f"{time.monotonic() - t1:.0f} s", flush=True)  # fmt: skip
            sidecar = start_sidecar(
                operator, "bench", "pod-0", "10.200.0.1", {"app": "svc-0"}, workdir
            )
            clusters = 0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                dump = sidecar.envoy.admin_json("/config_dump?resource=dynamic_active_clusters")
                clusters = sum(1 for c in dump.get("configs", []) if "svc-" in c["cluster"]["name"])
                if clusters >= args.services:
                    break
                time.sleep(1)
            time.sleep(3)
            rss = operator.rss_kib()
            print(
                f"operator RSS: {rss_empty / 1024:.0f} MiB empty, {rss / 1024:.0f} MiB with "
                f"{args.services} Services, {args.pods} Pods and one sidecar "
                f"({clusters} service clusters ACKed)",
                flush=True,
            )
            sidecar.envoy.stop()
        finally:
            operator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
