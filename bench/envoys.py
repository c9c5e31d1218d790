"""The check on the simulated proxies: real Envoys and simulated proxies side by side on the
same control plane and the same changes; convergence of each population, measured the same
way (the control plane's record of each proxy's ACK, relative to the file write)."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.loadgen import worker_main
from bench.registry import Registry
from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port


def _percentiles(values: list[float]) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {"count": 0}
    return {
        "count": len(data),
        "p50": round(data[len(data) // 2], 4),
        "p99": round(data[min(len(data) - 1, int(0.99 * len(data)))], 4),
        "max": round(data[-1], 4),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Comparison:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.registry = Registry(services=args.services)
        self.config = workdir / "config"
        self.registry.write(self.config)
        self.xds_port, self.debug_port = free_port(), free_port()
        self.cp = ControlPlaneProcess(
            self.config, self.xds_port, self.debug_port, workdir / "controlplane.log"
        )
        self.envoys: list[tuple[str, EnvoyProcess]] = []
        self.simulated: list[str] = []
        self.worker: Any = None
        self.pipe: Any = None

    def syncz(self) -> dict[str, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.debug_port}/debug/syncz"
        with urllib.request.urlopen(url, timeout=30) as response:
            data = json.loads(response.read().decode())
        return {p["node_id"]: p for p in data["proxies"]}

    def start(self) -> None:
        self.cp.start(timeout=120)
        delta = self.args.protocol == "delta"
        for i in range(self.args.envoys):
            node_id = f"sidecar~10.201.0.{i}~envoy-{i}.ns-0~ns-0.svc.cluster.local"
            bootstrap = render_bootstrap(
                node_id=node_id,
                namespace="ns-0",
                labels={"app": f"envoy-{i}"},
                service_account="default",
                xds_port=self.xds_port,
                outbound_port=free_port(),
                admin_port=free_port(),
                delta=delta,
            )
            envoy = EnvoyProcess(bootstrap, self.workdir, name=f"envoy-{i}", log_level="error")
            envoy.start()
            self.envoys.append((node_id, envoy))
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.worker = ctx.Process(target=worker_main, args=(child,), daemon=True)
        self.worker.start()
        self.simulated = [
            f"sidecar~10.202.0.{i}~sim-{i}.ns-0~ns-0.svc.cluster.local"
            for i in range(self.args.envoys)
        ]
        metadata = {"NAMESPACE": "ns-0", "LOCAL_OUTBOUND_PORT": "15001"}
        self.pipe.send(
            (
                "start",
                {
                    "target": f"127.0.0.1:{self.xds_port}",
                    "node_ids": self.simulated,
                    "metadata": metadata,
                    "delta": delta,
                },
            )
        )
        self.pipe.recv()

    def wait_all_synced(self, since: float, types: tuple[str, ...], timeout: float) -> dict:  # type: ignore[type-arg]
        """Wait until every proxy ACKed, after ``since``, the latest version of ``types``."""
        everyone = [n for n, _ in self.envoys] + self.simulated
        deadline = time.time() + timeout
        proxies: dict[str, dict[str, Any]] = {}
        while time.time() < deadline:
            proxies = self.syncz()
            if all(
                n in proxies
                and all(
                    proxies[n]["types"].get(t, {}).get("status") == "SYNCED"
                    and proxies[n]["types"][t]["acked_at"] >= since
                    for t in types
                )
                for n in everyone
            ):
                break
            time.sleep(0.2)
        return proxies

    def latencies(
        self, proxies: dict[str, dict[str, Any]], written: float, kind: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, names in (
            ("envoy", [n for n, _ in self.envoys]),
            ("simulated", self.simulated),
        ):
            values = [
                proxies[n]["types"][kind]["acked_at"] - written
                for n in names
                if n in proxies and proxies[n]["types"].get(kind, {}).get("acked_at", 0) >= written
            ]
            out[label] = _percentiles(values)
            out[label]["missing"] = len(names) - len(values)
        return out

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.start()
        proxies = self.wait_all_synced(0, ("cds", "eds", "lds", "rds"), self.args.storm_timeout)
        result: dict[str, Any] = {
            "envoys": len(self.envoys),
            "simulated": len(self.simulated),
            "protocol": self.args.protocol,
            "connect_seconds": {
                label: _percentiles(
                    [
                        max(
                            proxies[n]["types"][t]["acked_at"] for t in ("cds", "eds", "lds", "rds")
                        )
                        - started
                        for n in names
                        if n in proxies and "rds" in proxies[n]["types"]
                    ]
                )
                for label, names in (
                    ("envoy", [n for n, _ in self.envoys]),
                    ("simulated", self.simulated),
                )
            },
        }
        # A canary shift (RDS) and three pod changes (EDS), each measured for both.
        canaries = []
        for step, v2 in enumerate((50, 10, 50)):
            path = self.registry.rules_file(self.config, 0)
            written = time.time()
            tmp = path.with_name(".canary.tmp")
            tmp.write_text(self.registry.rules_yaml(0, 100 - v2, v2))
            os.replace(tmp, path)
            proxies = self.wait_all_synced(written, ("rds",), self.args.converge_timeout)
            canaries.append(self.latencies(proxies, written, "rds"))
            del step
        result["canary_ack_seconds"] = canaries
        churn = []
        for k in range(3):
            service = 10 + k
            path = self.registry.service_file(self.config, service)
            written = time.time()
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(self.registry.service_yaml(service, {0: k + 1}))
            os.replace(tmp, path)
            proxies = self.wait_all_synced(written, ("eds",), self.args.converge_timeout)
            churn.append(self.latencies(proxies, written, "eds"))
        result["endpoint_change_ack_seconds"] = churn
        result["envoy_rss_mb"] = [_rss_mb(e.process.pid) for _, e in self.envoys if e.process]
        assert self.cp.process is not None
        result["control_plane_rss_mb"] = _rss_mb(self.cp.process.pid)
        return result

    def stop(self) -> None:
        if self.pipe is not None:
            try:
                self.pipe.send(("stop", {}))
                if self.pipe.poll(20):
                    self.pipe.recv()
            except (OSError, EOFError):
                pass
        if self.worker is not None:
            self.worker.join(10)
            if self.worker.is_alive():
                self.worker.kill()
        for _, envoy in self.envoys:
            envoy.stop()
        self.cp.stop()


def run_envoys(args: argparse.Namespace) -> dict[str, Any]:
    """20 real Envoys and 20 simulated proxies on one control plane (see module doc)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-envoys-"))
    comparison = Comparison(args, workdir)
    print(f"[envoys] {args.envoys} real Envoys and {args.envoys} simulated proxies", flush=True)
    try:
        result = comparison.run()
    finally:
        comparison.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return result
