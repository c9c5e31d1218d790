"""Cold start of `controlplane run` against a real kube-apiserver (a benchmark, not a test).

    .venv/bin/python bench/coldstart.py [--services 1000] [--pods 3] [--runs 2]
        [--tree PATH ...] [--py-spy] [--tracemalloc] [--out bench/results/]

Fills the test cluster (tests/cluster LocalCluster: etcd + kube-apiserver, no controllers) with
``--services`` Services in 10 namespaces, ``--pods`` Pods each (with IPs, as the kubelet would
report them; the cluster has no endpoint controller, so no EndpointSlices, as in tests/kube),
and for 20 % of the services a DestinationRule (subsets v1/v2) and a VirtualService (90/10),
the shape of bench/registry.py. Then, for each ``--tree`` (a source tree whose
``controlplane`` package is run; default this one) and ``--runs`` times, alternating trees:

* starts `controlplane run` (no webhooks, the mesh CA on, as ``tests/kube`` runs it) and times
  process start -> ``/ready`` (``ready_s``);
* records the RSS at ready and 2 s later, before any proxy (``rss_ready_mib``,
  ``rss_settled_mib``);
* connects one simulated sidecar (Delta ADS, ``controlplane.testing.ads_client``) and times
  process start -> it holds a cluster with endpoints for every service (``served_s``);
* with ``--early-proxy``, the simulated sidecar connects as soon as the xDS port opens, and
  ``partial_responses`` counts the CDS responses it got that lacked services (must be 0).

``--py-spy`` samples the operator (py-spy from the venv, never part of the lock) from start
to served and writes the top functions (own and total samples) into the JSON; ``--tracemalloc``
runs the operator under tracemalloc and writes the 25 largest allocation sites (by traceback)
at ready. Both slow the operator down: their runs report no timings worth comparing.

The JSON goes to stdout and to ``--out`` (a directory: ``coldstart-<services>-<stamp>.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controlplane.compile.resources import CLUSTER, ENDPOINT  # noqa: E402
from controlplane.testing.ads_client import SimulatedProxy  # noqa: E402
from tests.cluster.cluster import LocalCluster  # noqa: E402
from tests.kube.operator import OperatorProcess, install_crds  # noqa: E402
from tests.kube.scale import DOMAIN, fill, namespace  # noqa: E402

METADATA = {"NAMESPACE": "ns-0", "ISTIO_VERSION": "1.24.0"}
NODE_ID = "sidecar~10.255.255.1~coldstart-probe.ns-0~ns-0.svc.cluster.local"


# ---- one operator start ------------------------------------------------------------------------


class Launch(OperatorProcess):
    """The operator of ``tree`` (its ``controlplane`` package first on the path), optionally
    under tracemalloc."""

    def __init__(self, cluster: LocalCluster, workdir: Path, tree: Path, traced: Path | None):
        super().__init__(cluster, workdir, webhooks=False)
        self.tree = tree
        self.traced = traced

    def argv(self) -> list[str]:
        args = super().argv()
        if self.traced is not None:
            # bench/coldstart.py --child-traced OUT run ...: tracemalloc, then the CLI.
            return [sys.executable, str(Path(__file__).resolve()), "--child-traced",
                    str(self.traced), *args[3:]]  # fmt: skip
        return args

    def spawn(self) -> float:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(self.tree))
        log = open(self.log_path, "ab")  # noqa: SIM115
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=self.workdir, start_new_session=True,
        )  # fmt: skip
        log.close()
        return started


class Probe:
    """One simulated Delta sidecar; tells when it holds every service with endpoints."""

    def __init__(self, port: int, services: int) -> None:
        self.wanted = {f"outbound|80||svc-{i}.{namespace(i)}.{DOMAIN}" for i in range(services)}
        self.clusters: set[str] = set()
        self.with_endpoints: set[str] = set()
        self.cds_responses = 0
        self.partial_responses = 0
        self.complete_at: float | None = None
        self.first_response_at: float | None = None
        self.proxy = SimulatedProxy(
            f"127.0.0.1:{port}", NODE_ID, METADATA, delta=True, on_response=self._on
        )

    def _on(self, proxy: SimulatedProxy, received: Any, response: Any) -> None:
        from envoy.config.endpoint.v3 import endpoint_pb2

        if self.first_response_at is None:
            self.first_response_at = time.monotonic()
        if response.type_url == CLUSTER:
            self.cds_responses += 1
            self.clusters |= {r.name for r in response.resources} & self.wanted
            if not self.wanted <= self.clusters:
                self.partial_responses += 1
        elif response.type_url == ENDPOINT:
            for r in response.resources:
                if r.name not in self.wanted:
                    continue
                cla = endpoint_pb2.ClusterLoadAssignment()
                r.resource.Unpack(cla)
                if any(loc.lb_endpoints for loc in cla.endpoints):
                    self.with_endpoints.add(r.name)
        if self.complete_at is None and self.wanted <= self.with_endpoints:
            self.complete_at = time.monotonic()

    async def run(self, timeout: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self.proxy.run(stop, reconnect=True))
        deadline = time.monotonic() + timeout
        try:
            while self.complete_at is None and time.monotonic() < deadline:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            task.cancel()
            try:
                await task
            except BaseException:
                pass


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def one_run(cluster: LocalCluster, tree: Path, args: argparse.Namespace, workdir: Path) -> dict:
    traced = workdir / "tracemalloc.json" if args.tracemalloc else None
    op = Launch(cluster, workdir, tree, traced)
    result: dict[str, Any] = {"tree": str(tree), "load_before": load_average()}
    started = op.spawn()
    assert op.process is not None
    spy = None
    if args.py_spy:
        spy_out = workdir / "py-spy.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
             str(op.process.pid), "--format", "raw", "--rate", "200", "--output", str(spy_out),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    probe = Probe(op.xds_port, args.services)
    try:
        if args.early_proxy:
            proxy_task = _background(probe.run, args.timeout)
        deadline = started + args.timeout
        while not op.ready():
            if op.process.poll() is not None:
                raise RuntimeError(f"operator exited:\n{op.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready in {args.timeout}s:\n{op.log_tail()}")
            time.sleep(0.02)
        result["ready_s"] = round(time.monotonic() - started, 2)
        result["cpu_at_ready_s"] = cpu_s(op.process.pid)
        if not args.early_proxy:
            result["rss_ready_mib"] = rss_mib(op.process.pid)
            if traced is not None:
                op.process.send_signal(signal.SIGUSR1)
            time.sleep(2.0)
            result["rss_settled_mib"] = rss_mib(op.process.pid)
            proxy_started = time.monotonic()
            asyncio.run(probe.run(args.timeout))
            result["proxy_connect_to_complete_s"] = round(
                (probe.complete_at or time.monotonic()) - proxy_started, 2
            )
        else:
            proxy_task.join(args.timeout)
            result["rss_with_proxy_mib"] = rss_mib(op.process.pid)
            if probe.first_response_at is not None:
                result["first_response_s"] = round(probe.first_response_at - started, 2)
        result["served_s"] = round(probe.complete_at - started, 2) if probe.complete_at else None
        result["cpu_at_served_s"] = cpu_s(op.process.pid)
        result["clusters"] = len(probe.clusters)
        result["with_endpoints"] = len(probe.with_endpoints)
        result["cds_responses"] = probe.cds_responses
        result["partial_responses"] = probe.partial_responses
        if not args.early_proxy:
            # The served interval includes the 2 s settle before the proxy connected.
            result["served_s"] = (
                round(result["ready_s"] + result["proxy_connect_to_complete_s"], 2)
                if probe.complete_at
                else None
            )
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            result["profile"] = top_of_profile(workdir / "py-spy.txt")
        if traced is not None:
            for _ in range(100):
                if traced.exists():
                    break
                time.sleep(0.1)
            if traced.exists():
                result["tracemalloc_top"] = json.loads(traced.read_text())
        log = op.log_text()
        result["first_snapshot_log"] = [
            line[:200] for line in log.splitlines() if "first snapshot" in line
        ]
        result["log_findings"] = sum(
            1 for line in log.splitlines() if " WARNING " in line or " ERROR " in line
        )
        result["log_sample"] = [
            line[:200] for line in log.splitlines() if " WARNING " in line or " ERROR " in line
        ][:5]
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        op.stop()
    return result


def _background(fn: Any, timeout: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(fn(timeout)), daemon=True)
    thread.start()
    return thread


def top_of_profile(path: Path, n: int = 20) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> top functions by own and by total samples."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return {
        "samples": samples,
        "own": [[f, c] for f, c in own.most_common(n)],
        "total": [[f, c] for f, c in total.most_common(n * 2)],
    }


def child_traced(out: str, cli_args: list[str]) -> None:
    """Run the CLI under tracemalloc; SIGUSR1 writes the top allocation sites to ``out``."""
    import runpy
    import tracemalloc

    tracemalloc.start(12)

    def dump(*_: Any) -> None:
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("traceback")
        top = []
        for stat in stats[:25]:
            frames = [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}"
                      for f in stat.traceback[-8:]]  # fmt: skip
            top.append({"mib": round(stat.size / 2**20, 2), "count": stat.count,
                        "where": frames})  # fmt: skip
        by_file = snap.statistics("filename")[:25]
        Path(out).write_text(json.dumps({
            "traced_mib": round(sum(s.size for s in stats) / 2**20, 1),
            "top": top,
            "by_file": [[s.traceback[0].filename.rsplit("site-packages/", 1)[-1],
                         round(s.size / 2**20, 2)] for s in by_file],
        }, indent=1))  # fmt: skip

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["controlplane", *cli_args]
    runpy.run_module("controlplane", run_name="__main__", alter_sys=True)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child-traced":
        child_traced(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tree", action="append", type=Path, help="source tree to run")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--early-proxy", action="store_true")
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    trees = args.tree or [REPO]
    report: dict[str, Any] = {
        "services": args.services,
        "pods": args.services * args.pods,
        "rules": args.services // 5,
        "machine": {"cpus": os.cpu_count(), "load_at_start": load_average()},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp, LocalCluster() as cluster:
        install_crds(cluster)
        report["fill"] = fill(cluster, args.services, args.pods, args.services // 5)
        print(f"filled: {report['fill']}", file=sys.stderr, flush=True)
        for r in range(args.runs):
            for t, tree in enumerate(trees):
                workdir = Path(tmp) / f"run-{r}-{t}"
                try:
                    result = one_run(cluster, tree.resolve(), args, workdir)
                except (TimeoutError, RuntimeError) as exc:  # recorded: the others still run
                    result = {"tree": str(tree.resolve()), "error": str(exc)[:2000]}
                report["runs"].append(result)
                summary = {
                    k: v
                    for k, v in result.items()
                    if k not in ("profile", "log_sample", "tracemalloc_top")
                }
                print(json.dumps(summary), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"coldstart-{args.services}-{stamp}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
