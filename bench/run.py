"""`make bench`: the control plane (its own process, file mode) against simulated proxies in
separate load-generator processes; results as JSON under bench/results/.

    python -m bench.run [--n 100,1000,5000] [--scenarios storm,steady,canary,churn,bad,envoy]
                        [--protocol delta|sotw] [--workers 3] [--churn-seconds 30]

Every wait is bounded; a scenario that times out is reported as such, never hangs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from pathlib import Path
from typing import Any

from bench.loadgen import worker_main
from bench.registry import Registry
from controlplane.compile.resources import ENDPOINT, ROUTE, VIRTUAL_HOST
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.ports import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_SCENARIOS = ("storm", "steady", "canary", "churn", "bad", "envoy", "programmed", "envoy-rss")
LOCAL_METADATA = {"NAMESPACE": "ns-0", "LOCAL_OUTBOUND_PORT": "15001", "ISTIO_VERSION": "1.24.0"}
# A sidecar as Istio injects it: transparent interception, one route table per port.
SIDECAR_METADATA = {"NAMESPACE": "ns-0", "ISTIO_VERSION": "1.24.0"}
DELIVERIES = ("full", "on-demand")
# On-demand proxies each call this many services: svc-0 (the canary's, so every proxy is
# subscribed to the host that changes: the worst case for a canary) and others spread over
# the mesh.
CALLS_PER_PROXY = 10


# ---- process accounting ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples the control plane's RSS every 100 ms; ``window()`` gives the peak since a mark."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def mark(self) -> None:
        self.peak = rss_bytes(self.pid)


class Accounting:
    """CPU seconds, peak RSS and bytes sent of the control plane over one scenario (and the
    load generators' CPU, to see who was short of it); optionally a py-spy profile."""

    def __init__(self, bench: Bench, name: str = "") -> None:
        self.bench = bench
        self.profiler: subprocess.Popen[bytes] | None = None
        spy = Path(sys.executable).parent / "py-spy"
        if bench.args.profile and name and not spy.exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        if bench.args.profile and name:
            out = bench.args.profile / f"{name}-{bench.n}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            self.profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(bench.pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(bench.args.profile_rate),
                    *(["--native"] if bench.args.profile_native else []),
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.cpu = cpu_seconds(bench.pid)
        self.worker_cpu = bench.worker_cpu()
        self.wall = time.time()
        self.sent = bench.metric_sum("controlplane_xds_sent_bytes_total")
        self.received = bench.received_bytes()
        bench.sampler.mark()

    def result(self) -> dict[str, Any]:
        wall = time.time() - self.wall
        cpu = cpu_seconds(self.bench.pid) - self.cpu
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            try:
                self.profiler.wait(20)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
            self.profiler = None
        return {
            "load_generator_cpu_seconds": round(self.bench.worker_cpu() - self.worker_cpu, 3),
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
            "peak_rss_mb": round(self.bench.sampler.peak / 2**20, 1),
            "rss_mb": round(rss_bytes(self.bench.pid) / 2**20, 1),
            "resource_bytes_sent": int(
                self.bench.metric_sum("controlplane_xds_sent_bytes_total") - self.sent
            ),
            "bytes_received_by_proxies": int(self.bench.received_bytes() - self.received),
        }


def percentiles(values: list[float] | array) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {"count": 0}

    def pick(q: float) -> float:
        return round(data[min(len(data) - 1, int(q * len(data)))], 4)

    return {
        "count": len(data),
        "min": round(data[0], 4),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": round(data[-1], 4),
        "mean": round(statistics.fmean(data), 4),
    }


# ---- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        n: int,
        workdir: Path,
        extra_args: list[str] | None = None,
        delivery: str = "full",
    ) -> None:
        self.args = args
        self.n = n
        self.delivery = delivery
        self.workdir = workdir
        self.registry = Registry(services=args.services)
        self.config = workdir / "config"
        self.registry.write(self.config)
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.cp = ControlPlaneProcess(
            self.config,
            self.xds_port,
            self.debug_port,
            workdir / "controlplane.log",
            extra_args=extra_args,
        )
        self.workers: list[tuple[Any, Any]] = []  # (process, pipe)
        self.watch_ids = 0
        self.canary_step = 0
        self.metadata = dict(SIDECAR_METADATA if args.mode == "sidecar" else LOCAL_METADATA)
        if delivery == "on-demand":
            self.metadata["ON_DEMAND"] = "true"

    # ---- plumbing -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.cp.process is not None
        return self.cp.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    def start(self) -> None:
        self.cp.start(timeout=120)
        self.sampler = Sampler(self.pid)
        self.sampler.start()
        ctx = mp.get_context("spawn")
        for _ in range(self.args.workers):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(child,), daemon=True)
            process.start()
            self.workers.append((process, parent))

    def worker_cpu(self) -> float:
        total = 0.0
        for process, _ in self.workers:
            try:
                total += cpu_seconds(process.pid)
            except OSError:
                pass
        return total

    def ask(self, command: str, args: dict[str, Any] | None = None) -> list[Any]:
        for _, pipe in self.workers:
            pipe.send((command, args or {}))
        out = []
        for _, pipe in self.workers:
            if not pipe.poll(120):
                raise TimeoutError(f"worker did not answer {command}")
            out.append(pipe.recv())
        return out

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.debug_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(response.read().decode())

    def metric_sum(self, name: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def received_bytes(self) -> int:
        if not self.workers:
            return 0
        return sum(int(s["received_bytes"]) for s in self.ask("status"))

    def stop(self) -> dict[str, Any]:
        final: dict[str, Any] = {}
        if self.workers:
            try:
                statuses = self.ask("stop")
                final["errors"] = sum(s["error_count"] for s in statuses)
                final["disconnects"] = sum(s["disconnects"] for s in statuses)
                final["never_fully_configured"] = sum(s["proxies"] - s["full"] for s in statuses)
                final["error_samples"] = [e for s in statuses for e in s["errors"]][:5]
            except (TimeoutError, OSError, EOFError) as exc:
                final["stop_error"] = str(exc)
            for process, _ in self.workers:
                process.join(10)
                if process.is_alive():
                    process.kill()
        self.sampler.running = False
        self.cp.stop()
        final["control_plane_log_errors"] = [
            line
            for line in self.cp.log_text().splitlines()
            if " ERROR " in line or "Traceback" in line
        ][:5]
        return final

    # ---- scenarios ----------------------------------------------------------------------

    def node_ids(self, count: int, offset: int = 0) -> list[str]:
        return [
            f"sidecar~10.200.{(i >> 8) & 255}.{i & 255}~bench-{i}.ns-0~ns-0.svc.cluster.local"
            for i in range(offset, offset + count)
        ]

    def calls(self, node_ids: list[str]) -> dict[str, list[str]] | None:
        """On-demand: the Hosts each proxy calls (svc-0, then others spread over the mesh)."""
        if self.delivery != "on-demand":
            return None
        services = self.registry.services
        out = {}
        for i, node_id in enumerate(node_ids):
            picked = [0] + [
                1 + (i * (CALLS_PER_PROXY - 1) + k) % (services - 1)
                for k in range(CALLS_PER_PROXY - 1)
            ]
            out[node_id] = [f"{self.registry.host(j)}:80" for j in picked]
        return out

    def warm_up(self) -> None:
        """One proxy first: the compile of the first proxy's shape is not per-proxy memory."""
        _, pipe = self.workers[0]
        ids = [self.node_ids(1, offset=60000)[0]]
        args = {
            "target": self.target,
            "node_ids": ids,
            "metadata": self.metadata,
            "calls": self.calls(ids),
        }
        pipe.send(("start", {**args, "delta": self.args.protocol == "delta"}))
        pipe.recv()
        deadline = time.time() + 120
        while time.time() < deadline and sum(s["full"] for s in self.ask("status")) < 1:
            time.sleep(0.1)
        time.sleep(1)

    def connect_storm(self) -> dict[str, Any]:
        account = Accounting(self, "storm")
        ids = self.node_ids(self.n)
        per = [ids[i :: len(self.workers)] for i in range(len(self.workers))]
        started = time.time()
        for (_, pipe), chunk in zip(self.workers, per, strict=True):
            pipe.send(
                (
                    "start",
                    {
                        "target": self.target,
                        "node_ids": chunk,
                        "metadata": self.metadata,
                        "delta": self.args.protocol == "delta",
                        "calls": self.calls(chunk),
                    },
                )
            )
        for _, pipe in self.workers:
            pipe.recv()
        deadline = started + self.args.storm_timeout
        statuses: list[dict[str, Any]] = []
        while time.time() < deadline:
            statuses = self.ask("status")
            if sum(s["full"] for s in statuses) >= self.n + 1:
                break
            time.sleep(0.25)
        full = sum(s["full"] for s in statuses) - 1  # without the warm-up proxy
        last = max((s["last_full_at"] for s in statuses), default=0.0)
        result = {
            "proxies": self.n,
            "fully_configured": full,
            "timed_out": full < self.n,
            "seconds_to_all_acked": round(last - started, 3) if full >= self.n else None,
            "errors": sum(s["error_count"] for s in statuses),
            "disconnects": sum(s["disconnects"] for s in statuses),
        }
        result.update(account.result())
        return result

    def steady(self) -> dict[str, Any]:
        time.sleep(2)
        account = Accounting(self, "steady")
        time.sleep(self.args.steady_seconds)
        result = account.result()
        result["rss_per_proxy_kb"] = round(
            (rss_bytes(self.pid) - self.baseline_rss) / 1024 / max(1, self.n), 1
        )
        result["baseline_rss_mb"] = round(self.baseline_rss / 2**20, 1)
        return result

    def watch(self, type_url: str, name: str | None, since: float) -> str:
        self.watch_ids += 1
        wid = f"w{self.watch_ids}"
        self.ask("watch", {"id": wid, "type_url": type_url, "name": name, "since": since})
        return wid

    def collect(self, wid: str) -> tuple[array, int]:
        latencies: array = array("d")
        missing = 0
        for reply in self.ask("collect", {"id": wid}):
            latencies.extend(reply["latencies"])
            missing += reply["missing"]
        return latencies, missing

    def canary(self) -> dict[str, Any]:
        account = Accounting(self, "canary")
        self.canary_step += 1
        v2 = 50 if self.canary_step % 2 else 10
        before = time.time()
        # On demand, the change reaches a proxy as the one virtual host it asked for.
        wid = self.watch(VIRTUAL_HOST if self.delivery == "on-demand" else ROUTE, None, before)
        path = self.registry.rules_file(self.config, 0)
        text = self.registry.rules_yaml(0, 100 - v2, v2)
        written = time.time()
        tmp = path.with_name(".canary.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        deadline = written + self.args.converge_timeout
        while time.time() < deadline:
            time.sleep(0.25)
            if sum(r["missing"] for r in self.ask("peek", {"id": wid})) == 0:
                break
        latencies, missing = self.collect(wid)
        converged = percentiles([x - (written - before) for x in latencies])
        result = {
            "change": f"VirtualService svc-0 weights {100 - v2}/{v2}",
            "convergence_seconds": converged,
            # From the first proxy's update to the 99th percentile's: the delivery itself,
            # without file mode's floor (the file settling, 0.2 s, then the debounce, 0.1 s).
            "p99_after_first_seconds": round(converged["p99"] - converged["min"], 4)
            if "p99" in converged
            else None,
            "not_converged": missing,
        }
        result.update(account.result())
        return result

    def canaries(self, repeats: int) -> dict[str, Any]:
        """Several canary shifts a few seconds apart: one shift's p99 is one sample."""
        shifts = []
        for i in range(max(1, repeats)):
            if i:
                time.sleep(3)
            shifts.append(self.canary())
        p99s = sorted(s["convergence_seconds"].get("p99", float("inf")) for s in shifts)
        return {
            "shifts": shifts,
            "p99_median": p99s[len(p99s) // 2],
            "p99_worst": p99s[-1],
            "not_converged": sum(s["not_converged"] for s in shifts),
        }

    def churn(self) -> dict[str, Any]:
        account = Accounting(self, "churn")
        rate, seconds = self.args.churn_rate, self.args.churn_seconds
        changes = int(rate * seconds)
        watches: list[tuple[str, float]] = []
        generation: dict[int, int] = {}
        start = time.time()
        for k in range(changes):
            due = start + k / rate
            time.sleep(max(0.0, due - time.time()))
            service = (k * 7919) % self.registry.services
            generation[service] = generation.get(service, 0) + 1
            gens = {0: generation[service]}
            written = time.time()
            wid = self.watch(ENDPOINT, self.registry.cluster(service), written)
            path = self.registry.service_file(self.config, service)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(self.registry.service_yaml(service, gens))
            os.replace(tmp, path)
            watches.append((wid, written))
        last_write = time.time()
        time.sleep(self.args.settle_seconds)
        churn_cpu = account.result()
        all_latencies: list[float] = []
        missing = 0
        for wid, _ in watches:
            latencies, miss = self.collect(wid)
            all_latencies.extend(latencies)
            missing += miss
        result = {
            "changes": changes,
            "rate_per_second": rate,
            # Lower than asked when the load generators were too busy to register watches
            # in time: each change waits for its watch to be registered first.
            "achieved_rate_per_second": round(changes / max(1e-9, last_write - start), 2),
            "eds_convergence_seconds": percentiles(all_latencies),
            "not_converged": missing,
        }
        result.update(churn_cpu)
        return result

    def bad_clients(self) -> dict[str, Any]:
        baseline = self.canary()
        kinds = {
            "garbage": self.args.bad_count,
            "unknown-names": self.args.bad_count,
            "nack-storm": self.args.bad_count,
            "never-reads": self.args.bad_count,
        }
        _, pipe = self.workers[0]
        pipe.send(("bad", {"target": self.target, "kinds": kinds, "metadata": self.metadata}))
        pipe.recv()
        time.sleep(5)
        with_bad = self.canary()
        stats = self.ask("status")[0]["bad"]
        return {
            "bad_clients": kinds,
            "bad_client_activity": stats,
            "canary_without": baseline,
            "canary_with": with_bad,
        }


def programmed_cost(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """What the Programmed condition costs during a canary at ``n`` proxies: the same canary
    shifts against a control plane with it and one without (``--no-programmed``), side by
    side: convergence p99, control-plane CPU, status writes (file mode counts the writes a
    cluster would get) and the CPU of the Programmed evaluation itself."""
    out: dict[str, Any] = {"proxies": n, "shifts": args.canary_repeats}
    for label, extra in (("with_programmed", []), ("without_programmed", ["--no-programmed"])):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-programmed-{n}-"))
        bench = Bench(args, n, workdir, extra_args=extra)
        try:
            bench.start()
            bench.warm_up()
            bench.baseline_rss = rss_bytes(bench.pid)
            storm = bench.connect_storm()
            if storm["timed_out"]:
                out[label] = {"timed_out": True}
                continue
            time.sleep(3)  # the storm's own verdicts and writes settle
            writes = bench.metric_sum("controlplane_status_writes_total")
            evaluation = bench.metric_sum("controlplane_programmed_evaluation_seconds_total")
            cpu = cpu_seconds(bench.pid)
            canaries = bench.canaries(args.canary_repeats)
            time.sleep(3)  # the last shift's Programmed write (after the grace) lands
            shifts = max(1, args.canary_repeats)
            out[label] = {
                "canary_p99_median_seconds": canaries["p99_median"],
                "canary_p99_worst_seconds": canaries["p99_worst"],
                "not_converged": canaries["not_converged"],
                "control_plane_cpu_seconds_per_shift": round(
                    (cpu_seconds(bench.pid) - cpu) / shifts, 3
                ),
                "programmed_evaluation_cpu_seconds_per_shift": round(
                    (
                        bench.metric_sum("controlplane_programmed_evaluation_seconds_total")
                        - evaluation
                    )
                    / shifts,
                    4,
                ),
                # Each shift changes one VirtualService and one DestinationRule.
                "status_writes_per_shift": round(
                    (bench.metric_sum("controlplane_status_writes_total") - writes) / shifts, 2
                ),
            }
        finally:
            bench.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"[N={n}] programmed {label}: {json.dumps(out.get(label))}", flush=True)
    return out


def run_n(
    args: argparse.Namespace, n: int, scenarios: list[str], delivery: str = "full"
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{n}-"))
    bench = Bench(args, n, workdir, delivery=delivery)
    out: dict[str, Any] = {"proxies": n, "delivery": delivery}
    if delivery == "on-demand":
        out["calls_per_proxy"] = CALLS_PER_PROXY
    try:
        bench.start()
        time.sleep(1)
        out["rss_before_any_proxy_mb"] = round(rss_bytes(bench.pid) / 2**20, 1)
        bench.warm_up()
        bench.baseline_rss = rss_bytes(bench.pid)
        out["rss_with_one_proxy_mb"] = round(bench.baseline_rss / 2**20, 1)
        print(f"[N={n} {delivery}] connect storm", flush=True)
        out["connect_storm"] = bench.connect_storm()
        print(json.dumps(out["connect_storm"]), flush=True)
        if out["connect_storm"]["timed_out"]:
            return out
        for name in scenarios:
            if name in ("storm", "envoy", "programmed", "envoy-rss"):
                continue
            print(f"[N={n} {delivery}] {name}", flush=True)
            if name == "steady":
                out["steady_state"] = bench.steady()
            elif name == "canary":
                out["canary_shift"] = bench.canaries(args.canary_repeats)
            elif name == "churn":
                out["endpoint_churn"] = bench.churn()
            elif name == "bad":
                out["bad_clients"] = bench.bad_clients()
            print(json.dumps(out.get(_KEYS[name])), flush=True)
    finally:
        out["shutdown"] = bench.stop()
        if out["shutdown"].get("errors") or out["shutdown"].get("disconnects") or args.keep_logs:
            kept = args.out / f"controlplane-{n}-{int(time.time())}.log"
            shutil.copy(workdir / "controlplane.log", kept)
            out["shutdown"]["control_plane_log"] = str(kept)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


_KEYS = {
    "steady": "steady_state",
    "canary": "canary_shift",
    "churn": "endpoint_churn",
    "bad": "bad_clients",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--n", default="100,1000,5000", help="proxy counts")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    parser.add_argument("--protocol", choices=("delta", "sotw"), default="delta")
    parser.add_argument(
        "--mode",
        choices=("local", "sidecar"),
        default="sidecar",
        help="simulated proxies as Istio's transparent sidecars, or in local mode (the demo's)",
    )
    parser.add_argument(
        "--delivery",
        default="full",
        help="full (every sidecar gets the whole table), on-demand (VHDS and on-demand CDS: "
        f"each proxy calls {CALLS_PER_PROXY} services), or both comma-separated, run one "
        "after the other at each N",
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--churn-rate", type=float, default=10.0)
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--storm-timeout", type=float, default=600.0)
    parser.add_argument("--converge-timeout", type=float, default=60.0)
    parser.add_argument("--bad-count", type=int, default=10)
    parser.add_argument("--canary-repeats", type=int, default=5, help="canary shifts to run")
    parser.add_argument("--envoys", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--keep-logs", action="store_true", help="keep the control plane log")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profiles here")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy: include native (C) frames"
    )
    args = parser.parse_args(argv)
    deliveries = [d for d in args.delivery.split(",") if d]
    if not deliveries or set(deliveries) - set(DELIVERIES):
        parser.error(f"--delivery: one or more of {', '.join(DELIVERIES)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "protocol": args.protocol,
        "mode": args.mode,
        "delivery": deliveries,
        "registry": {"services": args.services, "pods_per_service": 3, "vs": 200, "dr": 200},
        "runs": [],
    }
    # One sidecar's configuration without and with a Sidecar resource (in-process, seconds).
    from bench.sidecar_scope import measure as measure_sidecar_scope

    results["sidecar_scope"] = measure_sidecar_scope(args.services)
    if "on-demand" in deliveries:
        from bench.on_demand import measure as measure_on_demand

        results["on_demand_configuration"] = measure_on_demand(args.services, CALLS_PER_PROXY)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    suffix = "" if deliveries == ["full"] else "-" + "-".join(deliveries)
    path = args.out / f"bench-{args.protocol}-{args.mode}{suffix}-{stamp}.json"
    for n in [int(x) for x in re.split(r"[, ]+", args.n) if x]:
        if any(s not in ("envoy", "programmed", "envoy-rss") for s in scenarios):
            for delivery in deliveries:
                results["runs"].append(run_n(args, n, scenarios, delivery))
                path.write_text(json.dumps(results, indent=2) + "\n")
        if "programmed" in scenarios:
            results.setdefault("programmed_cost", []).append(programmed_cost(args, n))
            path.write_text(json.dumps(results, indent=2) + "\n")
    if "envoy-rss" in scenarios:
        from bench.on_demand import envoy_rss

        results["envoy_rss"] = envoy_rss(args.services, CALLS_PER_PROXY)
        path.write_text(json.dumps(results, indent=2) + "\n")
    if "envoy" in scenarios:
        from bench.envoys import run_envoys

        results["real_envoys"] = run_envoys(args)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
