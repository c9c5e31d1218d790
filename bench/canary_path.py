"""What one canary change costs the control plane before the first byte is written, in-process.

Loads the benchmark's mesh (bench/registry.py: 1,000 services, 200 VirtualServices and
DestinationRules) into a store and the compiled-config cache, compiles one proxy's shape, then applies a
VirtualService weight change ``--repeats`` times and times each step: ``Store.apply`` (with
the in-context checks), ``CompiledCache.publish`` (invalidation) and the recompile of the proxy's
shape (what the first stream to push does). Prints JSON; medians and ranges in seconds.

    .venv/bin/python bench/canary_path.py [--mode sidecar|local|gateway] [--repeats 10]

``--mode gateway``: the proxy is an ingress gateway (router mode, ``istio: ingressgateway``)
and the canary's VirtualService is bound to a Gateway (server ``*:80``) as well as to the
mesh, so each change rebuilds the gateway's ``http.80`` routes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.registry import Registry  # noqa: E402
from controlplane.cache import CompiledCache  # noqa: E402
from controlplane.compile.proxy import proxy_from_node  # noqa: E402
from controlplane.store import Store  # noqa: E402
from tests.documents import submissions  # noqa: E402

NODE = "sidecar~10.200.0.1~bench-1.ns-0~ns-0.svc.cluster.local"
GATEWAY_NODE = "router~10.200.0.2~ingress-1.istio-system~istio-system.svc.cluster.local"
METADATA = {
    "sidecar": {"NAMESPACE": "ns-0", "ISTIO_VERSION": "1.24.0"},
    "local": {"NAMESPACE": "ns-0", "LOCAL_OUTBOUND_PORT": "15001", "ISTIO_VERSION": "1.24.0"},
    "gateway": {
        "NAMESPACE": "istio-system",
        "LABELS": {"istio": "ingressgateway"},
        "ISTIO_VERSION": "1.24.0",
    },
}
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/*"]
"""


def canary_yaml(registry: Registry, mode: str, v1: int, v2: int) -> str:
    """Rules of service 0 with the given weights (bound to the gateway too in gateway mode)."""
    text = registry.rules_yaml(0, v1, v2)
    if mode == "gateway":
        text = text.replace(
            "  http:\n", "  gateways: [mesh, istio-system/bench-gateway]\n  http:\n", 1
        )
    return text


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


async def measure(mode: str, repeats: int) -> dict[str, Any]:
    registry = Registry()
    store = Store()
    docs = [s for i in range(registry.services) for s in submissions(registry.service_yaml(i))]
    docs += [s for i in range(1, registry.rules) for s in submissions(registry.rules_yaml(i))]
    docs += submissions(canary_yaml(registry, mode, 90, 10))
    if mode == "gateway":
        docs += submissions(GATEWAY)
    started = time.perf_counter()
    store.apply(docs)
    load = time.perf_counter() - started
    hub = CompiledCache(store)
    proxy = proxy_from_node(GATEWAY_NODE if mode == "gateway" else NODE, METADATA[mode], "")
    started = time.perf_counter()
    hub.shape_for(proxy)
    first = time.perf_counter() - started
    apply, publish, shape = [], [], []
    for step in range(repeats):
        v2 = 50 if step % 2 == 0 else 10
        change = submissions(canary_yaml(registry, mode, 100 - v2, v2))
        t0 = time.perf_counter()
        result = store.apply(change)
        t1 = time.perf_counter()
        hub.publish(store.snapshot, None, result.changed | result.status_changed)
        t2 = time.perf_counter()
        hub.shape_for(proxy)
        t3 = time.perf_counter()
        apply.append(t1 - t0)
        publish.append(t2 - t1)
        shape.append(t3 - t2)
    return {
        "mode": mode,
        "services": registry.services,
        "virtual_services": registry.rules,
        "initial_load_s": round(load, 3),
        "first_shape_compile_s": round(first, 3),
        "canary_store_apply_s": _summary(apply),
        "canary_publish_s": _summary(publish),
        "canary_shape_recompile_s": _summary(shape),
        "repeats": repeats,
        "proxy_config_bytes": sum(
            r.size for m in hub.shape_for(proxy).resources.by_type.values() for r in m.values()
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(METADATA), default="sidecar")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.mode, args.repeats)), indent=2))


if __name__ == "__main__":
    main()
