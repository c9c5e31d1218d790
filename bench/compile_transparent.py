"""Compile time for one transparent-mode sidecar in a mesh of 1,000 services and 200
VirtualServices (the shape istiod gives an injected pod: virtualOutbound, a listener and RDS
per HTTP port, a VIP listener per TCP port, virtualInbound for its own workload).

Each service has a VIP, an HTTP port (one of ten port numbers, so route configurations hold
many virtual hosts) and every fifth a TCP port; two pods v1/v2. 200 services have a
VirtualService (header match + weighted split; TCP ones a weighted tcp route) and a
DestinationRule with subsets. Times the first compile (lazy snapshot indexes included), a
cold compile on the indexed snapshot, serializing everything, and a second proxy of another
workload in the same namespace (sharing the memoized outbound resources). Prints JSON.

    .venv/bin/python bench/compile_transparent.py [--services 1000] [--virtual-services 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.api import load  # noqa: E402
from controlplane.compile import SnapshotCompiler  # noqa: E402
from controlplane.compile.proxy import proxy_from_node  # noqa: E402
from controlplane.compile.resources import SHORT_NAMES  # noqa: E402
from controlplane.store import Snapshot, Store, Submission  # noqa: E402


def _documents(services: int, virtual_services: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i in range(services):
        name, ns = f"svc-{i}", f"ns-{i % 5}"
        ports = [{"name": "http", "port": 8000 + i % 10}]
        if i % 5 == 0:
            ports.append({"name": "tcp", "port": 9000})
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                    "selector": {"app": name},
                    "ports": ports,
                },
            }
        )
        for v in (1, 2):
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{name}-v{v}",
                        "namespace": ns,
                        "labels": {"app": name, "version": f"v{v}"},
                    },
                    "status": {"podIP": f"10.{100 + i // 250}.{i % 250}.{v}"},
                }
            )
        if i < virtual_services:
            docs.append(
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
                }
            )
            split = [
                {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                {"destination": {"host": name, "subset": "v2"}, "weight": 10},
            ]
            spec: dict[str, Any] = {
                "hosts": [name],
                "http": [
                    {
                        "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                        "route": [{"destination": {"host": name, "subset": "v2"}}],
                    },
                    {
                        "route": [
                            {
                                **d,
                                "destination": {
                                    **d["destination"],
                                    "port": {"number": 8000 + i % 10},
                                },
                            }
                            for d in split
                        ]
                    },
                ],
            }
            if i % 5 == 0:
                spec["tcp"] = [
                    {
                        "match": [{"port": 9000}],
                        "route": [
                            {**d, "destination": {**d["destination"], "port": {"number": 9000}}}
                            for d in split
                        ],
                    }
                ]
            docs.append(
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": spec,
                }
            )
    return docs


def snapshot(services: int, virtual_services: int) -> Snapshot:
    store = Store()
    subs = []
    for doc in _documents(services, virtual_services):
        resource, issues = load(doc)
        subs.append(Submission(resource, tuple(issues)))
    store.apply(upserts=subs)
    return store.snapshot


def workload_proxy(i: int, version: int = 1) -> Any:
    return proxy_from_node(
        f"sidecar~10.{100 + i // 250}.{i % 250}.{version}~svc-{i}-v{version}.ns-{i % 5}~ns-{i % 5}.svc.cluster.local",
        {"NAMESPACE": f"ns-{i % 5}", "LABELS": {"app": f"svc-{i}", "version": f"v{version}"}},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--virtual-services", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    snap = snapshot(args.services, args.virtual_services)
    built = time.perf_counter() - started
    proxy = workload_proxy(0)

    started = time.perf_counter()
    out = SnapshotCompiler(snap).compile(proxy)
    first = time.perf_counter() - started

    cold = []
    for _ in range(3):
        started = time.perf_counter()
        out = SnapshotCompiler(snap).compile(proxy)
        cold.append(time.perf_counter() - started)

    started = time.perf_counter()
    size = sum(len(r.value) for by_name in out.by_type.values() for r in by_name.values())
    serialize = time.perf_counter() - started

    compiler = SnapshotCompiler(snap)
    compiler.compile(proxy)
    started = time.perf_counter()
    compiler.compile(workload_proxy(5))  # another workload, same namespace
    second = time.perf_counter() - started

    print(
        json.dumps(
            {
                "benchmark": "compile_transparent",
                "services": args.services,
                "virtual_services": args.virtual_services,
                "snapshot_build_s": round(built, 3),
                "first_compile_s": round(first, 3),
                "cold_compile_s_best": round(min(cold), 3),
                "serialize_all_s": round(serialize, 3),
                "second_proxy_same_namespace_s": round(second, 4),
                "resources": {SHORT_NAMES[t]: len(v) for t, v in out.by_type.items()},
                "bytes": size,
            }
        )
    )


if __name__ == "__main__":
    main()
