"""Compile time for one proxy in a mesh of 1,000 services and 200 VirtualServices.

Builds a synthetic snapshot (each service: one HTTP port, two pods v1/v2 and, as in a
cluster, an EndpointSlice listing them unless ``--pods-only``; 200 of them with a
VirtualService using matches, weights, retries, timeouts, faults, mirrors and header operations,
and a DestinationRule with subsets and traffic policies), then times, for one local-mode proxy:
the first compile of the snapshot (which also builds the snapshot's lazy indexes), a cold
compile (fresh SnapshotCompiler on the indexed snapshot), serializing every resource, and a
second proxy in the same namespace (which shares the memoized resources). Prints JSON.

    .venv/bin/python bench/compile_one_proxy.py [--services 1000] [--virtual-services 200]
        [--repeats 5] [--pods-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.api import load  # noqa: E402
from controlplane.compile import SnapshotCompiler  # noqa: E402
from controlplane.compile.proxy import Proxy  # noqa: E402
from controlplane.store import Snapshot, Store, Submission  # noqa: E402


def _service(i: int, slices: bool) -> list[dict[str, Any]]:
    name = f"svc-{i}"
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
            },
        }
    ]
    for v in (1, 2):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-v{v}",
                    "namespace": "default",
                    "labels": {"app": name, "version": f"v{v}"},
                },
                "status": {"podIP": f"10.{i // 250}.{i % 250}.{v}"},
            }
        )
    if slices:
        # As in a cluster: the EndpointSlice controller lists the pods of each service.
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-abcde",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {
                        "addresses": [f"10.{i // 250}.{i % 250}.{v}"],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": f"{name}-v{v}"},
                    }
                    for v in (1, 2)
                ],
            }
        )
    return docs


def _rules(i: int, services: int) -> list[dict[str, Any]]:
    name = f"svc-{i}"
    http: list[dict[str, Any]] = [
        {
            "name": "canary",
            "match": [{"headers": {"end-user": {"exact": "jason"}}}, {"uri": {"prefix": "/beta"}}],
            "route": [{"destination": {"host": name, "subset": "v2"}}],
            "headers": {"request": {"set": {"x-canary": "1"}}},
        },
        {
            "name": "api",
            "match": [{"uri": {"regex": "/api/v[0-9]+/.*"}, "method": {"exact": "GET"}}],
            "timeout": "2s",
            "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,503"},
            "route": [{"destination": {"host": name, "subset": "v1"}}],
        },
        {
            "name": "split",
            "route": [
                {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                {"destination": {"host": name, "subset": "v2"}, "weight": 10},
            ],
            "mirror": {"host": f"svc-{(i + 1) % services}"},
            "mirrorPercentage": {"value": 5},
        },
    ]
    if i % 4 == 0:
        http[0]["fault"] = {"abort": {"httpStatus": 503, "percentage": {"value": 1}}}
    policy: dict[str, Any] = {
        "connectionPool": {"tcp": {"maxConnections": 100}, "http": {"http1MaxPendingRequests": 10}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"},
    }
    if i % 2 == 0:
        policy["loadBalancer"] = {"consistentHash": {"httpHeaderName": "x-user"}}
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": [name], "http": http},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "host": name,
                "trafficPolicy": policy,
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
    ]


def build_snapshot(
    services: int, virtual_services: int, slices: bool
) -> tuple[Snapshot, int, float]:
    docs: list[dict[str, Any]] = []
    for i in range(services):
        docs += _service(i, slices)
    for i in range(virtual_services):
        docs += _rules(i, services)
    started = time.perf_counter()
    store = Store()
    store.apply(upserts=[Submission(*_loaded(doc)) for doc in docs])
    return store.snapshot, len(docs), time.perf_counter() - started


def _loaded(doc: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    resource, issues = load(doc)
    return resource, tuple(issues)


def _proxy(name: str) -> Proxy:
    return Proxy(
        node_id=f"sidecar~127.0.0.1~{name}.default~default.svc.cluster.local",
        namespace="default",
        labels={"app": name},
        local_outbound_port=15001,
    )


def measure(services: int, virtual_services: int, repeats: int, slices: bool) -> dict[str, Any]:
    snapshot, documents, load_s = build_snapshot(services, virtual_services, slices)
    # The first compile also builds the snapshot's lazy indexes (services, endpoints per
    # service), which every later compile of the same snapshot reuses.
    started = time.perf_counter()
    SnapshotCompiler(snapshot).compile(_proxy("first"))
    first = time.perf_counter() - started
    cold: list[float] = []
    serialize: list[float] = []
    shared: list[float] = []
    counts: dict[str, int] = {}
    size = 0
    for _ in range(repeats):
        compiler = SnapshotCompiler(snapshot)
        started = time.perf_counter()
        out = compiler.compile(_proxy("client"))
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        size = sum(len(r.value) for resources in out.by_type.values() for r in resources.values())
        serialize.append(time.perf_counter() - started)
        started = time.perf_counter()
        compiler.compile(_proxy("another-client"))
        shared.append(time.perf_counter() - started)
        counts = {t.rsplit(".", 1)[-1]: len(r) for t, r in out.by_type.items()}
    return {
        "services": services,
        "virtual_services": virtual_services,
        "destination_rules": virtual_services,
        "endpoints_from": "EndpointSlices" if slices else "Pods (service selectors)",
        "documents": documents,
        "load_and_validate_s": round(load_s, 3),
        "first_compile_with_snapshot_indexes_s": round(first, 3),
        "compile_one_proxy_cold_s": {
            "median": round(statistics.median(cold), 3),
            "min": round(min(cold), 3),
            "max": round(max(cold), 3),
        },
        "serialize_all_resources_s": round(statistics.median(serialize), 3),
        "compile_second_proxy_same_namespace_s": round(statistics.median(shared), 4),
        "resources": counts,
        "serialized_bytes": size,
        "repeats": repeats,
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--virtual-services", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pods-only",
        action="store_true",
        help="no EndpointSlices: endpoints come from matching each service's selector to pods",
    )
    args = parser.parse_args()
    result = measure(args.services, args.virtual_services, args.repeats, not args.pods_only)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
