"""What the store holds after cluster mode's first listing, in process (a benchmark, not a test).

    .venv/bin/python bench/coldstart_memory.py [--services 1000] [--pods 3] [--frames 6]

The same objects bench/coldstart.py puts in the apiserver (tests/kube/scale.py), as the
apiserver lists them, go through the cluster source's path (``EventFeed.translate``, one
``apply_updates`` into a ``Store`` with the compile check, as ``controlplane run`` builds
it); tracemalloc then groups what is still allocated by traceback. Prints JSON: the traced
total, the RSS growth (measured in a second pass without tracemalloc), the top sites.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.compile.check import check_resource  # noqa: E402
from controlplane.sources.kube.watch import EventFeed, apply_updates  # noqa: E402
from controlplane.store import Store  # noqa: E402
from tests.kube.scale import as_listed  # noqa: E402

PLURAL = {
    "Service": "services",
    "Pod": "pods",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(services: int, pods: int) -> tuple[Store, float]:
    docs = as_listed(services, pods, services // 5)
    started = time.perf_counter()
    feed = EventFeed(lambda update: None)
    updates = [feed.translate(None, d, PLURAL[d["kind"]]) for d in docs]
    del docs
    store = Store(compile_check=check_resource)
    apply_updates(store, [u for u in updates if u is not None])
    del updates
    gc.collect()
    return store, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    gc.collect()
    before = rss_mib()
    store, seconds = load(args.services, args.pods)
    grown = rss_mib() - before
    del store
    gc.collect()
    tracemalloc.start(args.frames)
    store, _ = load(args.services, args.pods)
    snap = tracemalloc.take_snapshot()
    stats = snap.statistics("traceback")
    top: list[dict[str, Any]] = []
    for stat in stats[:25]:
        where = [
            f"{f.filename.rsplit('site-packages/', 1)[-1].rsplit('wt-kubescale/', 1)[-1]}"
            f":{f.lineno}"
            for f in stat.traceback
        ]
        top.append({"mib": round(stat.size / 2**20, 2), "count": stat.count, "where": where})
    by_file = [
        [s.traceback[0].filename.rsplit("site-packages/", 1)[-1], round(s.size / 2**20, 2)]
        for s in snap.statistics("filename")[:15]
    ]
    print(
        json.dumps(
            {
                "services": args.services,
                "objects": sum(len(v) for v in store.snapshot.resources.values()),
                "load_s": round(seconds, 2),
                "rss_growth_mib": round(grown, 1),
                "traced_mib": round(sum(s.size for s in stats) / 2**20, 1),
                "by_file": by_file,
                "top": top,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
