"""What zero trust costs the compiler: one transparent-mode sidecar in the mesh of
``compile_transparent.py`` (1,000 services, 200 VirtualServices), compiled without identity,
with an identity (auto mTLS on every cluster, mTLS inbound chains), and with an identity plus
a mesh-wide STRICT PeerAuthentication and an AuthorizationPolicy per namespace. Prints JSON.

    .venv/bin/python bench/compile_secure.py [--services 1000] [--virtual-services 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compile_transparent import _documents, workload_proxy  # noqa: E402
from controlplane.api import load  # noqa: E402
from controlplane.compile import SnapshotCompiler  # noqa: E402
from controlplane.store import Snapshot, Store, Submission  # noqa: E402


def _secured(docs: list[dict[str, Any]], policies: bool) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        if doc["kind"] == "Pod":  # every workload runs a sidecar
            doc = {
                **doc,
                "metadata": {
                    **doc["metadata"],
                    "annotations": {"sidecar.istio.io/status": "injected"},
                },
            }
            doc["spec"] = {"serviceAccountName": doc["metadata"]["labels"]["app"]}
        out.append(doc)
    if policies:
        out.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": "istio-system"},
                "spec": {"mtls": {"mode": "STRICT"}},
            }
        )
        for n in range(5):
            out.append(
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {"name": "callers", "namespace": f"ns-{n}"},
                    "spec": {
                        "rules": [
                            {
                                "from": [{"source": {"namespaces": [f"ns-{n}", "ns-0"]}}],
                                "to": [{"operation": {"methods": ["GET", "POST"]}}],
                            }
                        ]
                    },
                }
            )
    return out


def _snapshot(docs: list[dict[str, Any]]) -> Snapshot:
    store = Store()
    subs = []
    for doc in docs:
        resource, issues = load(doc)
        subs.append(Submission(resource, tuple(issues)))
    store.apply(upserts=subs)
    return store.snapshot


def _cold(snapshot: Snapshot, proxy: Any) -> tuple[float, int]:
    SnapshotCompiler(snapshot).compile(proxy)  # warm the snapshot's lazy indexes
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        out = SnapshotCompiler(snapshot).compile(proxy)
        size = sum(len(r.value) for by_name in out.by_type.values() for r in by_name.values())
        best = min(best, time.perf_counter() - started)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--virtual-services", type=int, default=200)
    args = parser.parse_args()
    base = _documents(args.services, args.virtual_services)
    proxy = workload_proxy(0)
    identified = replace(proxy, identity="spiffe://cluster.local/ns/ns-0/sa/svc-0")
    results = {}
    for label, docs, who in (
        ("no_identity", _secured(base, policies=False), proxy),
        ("identity_auto_mtls", _secured(base, policies=False), identified),
        ("identity_strict_and_authz", _secured(base, policies=True), identified),
    ):
        seconds, size = _cold(_snapshot(docs), who)
        results[label] = {"cold_compile_and_serialize_s": round(seconds, 3), "bytes": size}
    print(json.dumps({"benchmark": "compile_secure", "services": args.services, **results}))


if __name__ == "__main__":
    main()
