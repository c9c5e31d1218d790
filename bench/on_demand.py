"""On-demand delivery against the full table, for one sidecar in the benchmark's mesh
(``bench/registry.py``: 1,000 services in 10 namespaces, 200 with a DestinationRule and a
VirtualService).

``measure``: in-process, the configuration a transparent sidecar in ``ns-0`` holds with the
full table, and in on-demand mode after calling ``calls`` services (svc-0, then others
spread over the mesh, as ``bench.run`` makes its simulated proxies call them): what a
wildcard subscription gets, plus the virtual hosts of those Hosts, the clusters their
routes name and those clusters' endpoints, in serialized bytes.

``envoy_rss``: one real Envoy (local mode, Delta) against the control plane serving that
mesh from files: its RSS and heap with the full table, then (a fresh Envoy) in on-demand
mode after one request to each of ``calls`` services. The services have no backends of
ours: each request is routed upstream to a pod address and answered by whatever is there (or
fails), but Envoy has fetched each host and cluster by then.

    .venv/bin/python -m bench.on_demand [--services 1000] [--calls 10] [--no-envoy]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.registry import Registry
from bench.sidecar_scope import METADATA, NODE_ID, _submissions
from controlplane.cache.shapes import ViewCache
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import proxy_from_node
from controlplane.compile.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    VIRTUAL_HOST,
    CompiledResource,
)
from controlplane.store import Store
from controlplane.testing.ads_client import cluster_eds_names, virtual_host_clusters

ROUTE_NAME = "80"


def called_hosts(registry: Registry, calls: int, proxy: int = 1) -> list[str]:
    """The Hosts proxy number ``proxy`` of ``bench.run`` calls (svc-0 first)."""
    services = registry.services
    picked = [0] + [1 + (proxy * (calls - 1) + k) % (services - 1) for k in range(calls - 1)]
    return [f"{registry.host(j)}:80" for j in picked]


def _size(resources: list[CompiledResource]) -> int:
    return sum(r.size for r in resources)


def measure(services: int = 1000, calls: int = 10) -> dict[str, Any]:
    """Bytes and counts of one sidecar's configuration: full table, on demand."""
    registry = Registry(services=services)
    store = Store()
    store.apply(upserts=_submissions(registry))
    compiler = SnapshotCompiler(store.snapshot)
    full = compiler.compile(proxy_from_node(NODE_ID, METADATA))
    full_bytes = {t: _size(list(full.of(t).values())) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
    on_demand = compiler.compile(proxy_from_node(NODE_ID, {**METADATA, "ON_DEMAND": "true"}))
    views = ViewCache()
    clusters = dict(views.view(on_demand.of(CLUSTER), True, frozenset()))
    hosts = on_demand.of(VIRTUAL_HOST)
    asked = [hosts[f"{ROUTE_NAME}/{h}"] for h in called_hosts(registry, calls)]
    from envoy.service.discovery.v3 import discovery_pb2

    named = virtual_host_clusters(
        [discovery_pb2.Resource(name=r.name, resource=r.any) for r in asked]
    )
    for name in named:
        clusters[name] = on_demand.of(CLUSTER)[name]
    eds_names = cluster_eds_names([r.any for r in clusters.values()], list(clusters))
    endpoints = [on_demand.of(ENDPOINT)[n] for n in eds_names if n in on_demand.of(ENDPOINT)]
    parts = {
        "cds": {"count": len(clusters), "bytes": _size(list(clusters.values()))},
        "eds": {"count": len(endpoints), "bytes": _size(endpoints)},
        "lds": {
            "count": len(on_demand.of(LISTENER)),
            "bytes": _size(list(on_demand.of(LISTENER).values())),
        },
        "rds": {
            "count": len(on_demand.of(ROUTE)),
            "bytes": _size(list(on_demand.of(ROUTE).values())),
        },
        "vhds": {"count": len(asked), "bytes": _size(asked)},
    }
    total_full = sum(full_bytes.values())
    total_on_demand = sum(p["bytes"] for p in parts.values())
    return {
        "services": services,
        "calls": calls,
        "full_table": {
            "bytes": total_full,
            "by_type": {
                short: {"count": len(full.of(t)), "bytes": full_bytes[t]}
                for short, t in (
                    ("cds", CLUSTER),
                    ("eds", ENDPOINT),
                    ("lds", LISTENER),
                    ("rds", ROUTE),
                )
            },
        },
        "on_demand_after_calls": {"bytes": total_on_demand, "by_type": parts},
        "bytes_ratio": round(total_on_demand / total_full, 4),
        "one_virtual_host_bytes": asked[0].size,
    }


# ---- a real Envoy ---------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _envoy_memory(sidecar: Any) -> dict[str, float]:
    stats = sidecar.envoy.admin(
        "/stats?filter=^server.memory_allocated$|^cluster_manager.active_clusters$"
    )
    values = {}
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        values[name.strip()] = float(value)
    return {
        "rss_mb": round(_rss_kb(sidecar.envoy.process.pid) / 1024, 1),
        "heap_allocated_mb": round(values.get("server.memory_allocated", 0) / 2**20, 1),
        "clusters": values.get("cluster_manager.active_clusters", 0),
    }


def envoy_rss(services: int = 1000, calls: int = 10, settle: float = 3.0) -> dict[str, Any]:
    """RSS of one real Envoy: full table, then (a fresh one) on demand after ``calls`` calls."""
    from controlplane.testing.mesh import LocalMesh
    from controlplane.testing.traffic import send

    registry = Registry(services=services)
    workdir = Path(tempfile.mkdtemp(prefix="bench-on-demand-envoy-"))
    mesh = LocalMesh(workdir)
    out: dict[str, Any] = {"services": services, "calls": calls, "mode": "local, Delta"}
    try:
        registry.write(mesh.config_dir)
        mesh.control_plane.start(timeout=120)
        for delivery in ("full", "on-demand"):
            metadata = {"NAMESPACE": "ns-0"}
            if delivery == "on-demand":
                metadata["ON_DEMAND"] = "true"
            sidecar = mesh.sidecar(
                f"sidecar~127.0.0.1~rss-{delivery}.ns-0~ns-0.svc.cluster.local",
                namespace="ns-0",
                delta=True,
                extra_metadata=metadata,
                wait=False,
            )
            types = ("cds", "lds", "rds") + (("vhds",) if delivery == "on-demand" else ("eds",))
            mesh.debug.wait_synced(sidecar.node_id, types=types, timeout=120)
            sidecar.envoy.wait_live(timeout=120)
            statuses = []
            first_ms: list[float] = []
            again_ms: list[float] = []
            if delivery == "on-demand":
                for host in called_hosts(registry, calls):
                    started = time.perf_counter()
                    status, headers, _ = send(sidecar.outbound_port, host, timeout=20)
                    first_ms.append(round(1000 * (time.perf_counter() - started), 1))
                    started = time.perf_counter()
                    send(sidecar.outbound_port, host, timeout=20)
                    again_ms.append(round(1000 * (time.perf_counter() - started), 1))
                    # Routed means sent upstream (whatever answers at the pod address).
                    routed = "x-envoy-upstream-service-time" in headers
                    statuses.append(f"{status} {'routed' if routed else 'not routed'}")
            time.sleep(settle)
            out[delivery] = {**_envoy_memory(sidecar), "request_statuses": statuses}
            if first_ms:
                # A request to a host not yet fetched waits for VHDS and on-demand CDS.
                out[delivery]["first_request_ms"] = first_ms
                out[delivery]["second_request_ms"] = again_ms
            sidecar.envoy.stop()
        out["rss_ratio"] = round(out["on-demand"]["rss_mb"] / out["full"]["rss_mb"], 3)
        out["heap_ratio"] = round(
            out["on-demand"]["heap_allocated_mb"] / max(out["full"]["heap_allocated_mb"], 0.1), 3
        )
    finally:
        mesh.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--no-envoy", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"configuration": measure(args.services, args.calls)}
    if not args.no_envoy:
        result["envoy"] = envoy_rss(args.services, args.calls)
    print(json.dumps({"benchmark": "on_demand", **result}, indent=2))


if __name__ == "__main__":
    main()
