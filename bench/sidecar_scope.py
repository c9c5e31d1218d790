"""The size of one sidecar's configuration in the benchmark's mesh (``bench/registry.py``:
1,000 services in 10 namespaces, 200 with a DestinationRule and a VirtualService), without
and with a Sidecar resource in the proxy's namespace that imports ``./*`` and
``istio-system/*`` (Istio's usual advice for large meshes). In-process: compiles the proxy
``bench.run`` simulates (a transparent sidecar in ``ns-0``) and counts the serialized bytes
and resources of CDS, EDS, LDS and RDS. ``make bench`` adds the result to its JSON
(``sidecar_scope``). Prints JSON:

    .venv/bin/python -m bench.sidecar_scope [--services 1000]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from bench.registry import Registry
from controlplane.api import load
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import proxy_from_node
from controlplane.compile.resources import SHORT_NAMES
from controlplane.store import Store, Submission

NODE_ID = "sidecar~10.200.0.1~bench-1.ns-0~ns-0.svc.cluster.local"
METADATA = {"NAMESPACE": "ns-0", "ISTIO_VERSION": "1.24.0"}
SIDECAR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "default", "namespace": "ns-0"},
    "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]},
}


def _submissions(registry: Registry) -> list[Submission]:
    texts = [registry.service_yaml(i) for i in range(registry.services)]
    texts += [registry.rules_yaml(i) for i in range(min(registry.rules, registry.services))]
    out = []
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc:
                resource, issues = load(doc)
                out.append(Submission(resource, tuple(issues)))
    return out


def _measure(store: Store) -> dict[str, Any]:
    proxy = proxy_from_node(NODE_ID, METADATA)
    compiled = SnapshotCompiler(store.snapshot).compile(proxy)
    by_type = {
        SHORT_NAMES[t]: {
            "count": len(resources),
            "bytes": sum(len(r.value) for r in resources.values()),
        }
        for t, resources in compiled.by_type.items()
    }
    return {"bytes": sum(v["bytes"] for v in by_type.values()), "by_type": by_type}


def measure(services: int = 1000) -> dict[str, Any]:
    """Both sizes and their ratio."""
    store = Store()
    store.apply(upserts=_submissions(Registry(services=services)))
    without = _measure(store)
    sidecar, issues = load(SIDECAR)
    store.apply(upserts=[Submission(sidecar, tuple(issues))])
    scoped = _measure(store)
    return {
        "services": services,
        "proxy_namespace": "ns-0",
        "sidecar_egress_hosts": SIDECAR["spec"]["egress"][0]["hosts"],  # type: ignore[index]
        "without_sidecar": without,
        "with_sidecar": scoped,
        "bytes_ratio": round(scoped["bytes"] / without["bytes"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "sidecar_scope", **measure(args.services)}, indent=2))


if __name__ == "__main__":
    main()
