"""`controlplane demo`: a real Envoy follows a canary weight shift.

Starts the control plane in file mode on a copy of ``examples/canary``, two ``reviews``
backends (v1 on 127.0.0.11, v2 on 127.0.0.12), one Envoy sidecar for a client, then rewrites
the VirtualService's weights step by step. After each step it sends requests through the
sidecar and prints the intended and observed split, and how long the change took from the
file write until Envoy ACKed it.

With ``--ingress`` the requests enter the mesh through an ingress gateway instead: a gateway
Envoy (router mode, labelled ``istio: ingressgateway``) serves the Gateway of
``examples/ingress`` and the canary VirtualService, bound to the gateway as well as to the
mesh, splits what arrives with ``Host: reviews.example.com``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from controlplane.cli import command
from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.backends import Backend
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port, port_is_free
from controlplane.testing.traffic import count_backends

if TYPE_CHECKING:
    from controlplane.cli import Commands

STEPS: tuple[tuple[int, int], ...] = ((100, 0), (90, 10), (50, 50), (0, 100))
BACKENDS = (("reviews-v1", "127.0.0.11"), ("reviews-v2", "127.0.0.12"))
BACKEND_PORT = 9080
NODE_ID = "sidecar~127.0.0.1~productpage-demo.default~default.svc.cluster.local"
GATEWAY_NODE_ID = (
    "router~127.0.0.1~istio-ingressgateway-demo.istio-system~istio-system.svc.cluster.local"
)
INGRESS_HOST = "reviews.example.com"


@dataclass(frozen=True)
class StepResult:
    intended: tuple[int, int]
    observed: tuple[int, int]  # requests answered by v1, v2
    other: int  # requests answered by neither (errors)
    ack_latency_ms: float | None  # file write -> Envoy ACK; None for the initial config

    @property
    def observed_percent(self) -> tuple[float, float]:
        total = sum(self.observed) + self.other
        if not total:
            return (0.0, 0.0)
        return (100.0 * self.observed[0] / total, 100.0 * self.observed[1] / total)


@dataclass(frozen=True)
class DemoResult:
    steps: list[StepResult]
    envoy_start_to_ack_ms: float

    @property
    def median_ack_latency_ms(self) -> float:
        latencies = [s.ack_latency_ms for s in self.steps if s.ack_latency_ms is not None]
        return statistics.median(latencies) if latencies else 0.0


def examples_dir(name: str = "canary") -> Path:
    here = Path(__file__).resolve().parents[2] / "examples" / name
    if not here.is_dir():
        raise FileNotFoundError(f"the demo's example configuration is missing: {here}")
    return here


def _say(message: str) -> None:
    print(message, flush=True)


def write_weights(path: Path, v1: int, v2: int) -> None:
    """Rewrite the VirtualService's two weights, atomically (as an editor would save)."""
    doc = yaml.safe_load(path.read_text())
    routes = doc["spec"]["http"][0]["route"]
    routes[0]["weight"], routes[1]["weight"] = v1, v2
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def bind_to_gateway(config: Path, port: int) -> None:
    """``--ingress``: the Gateway of ``examples/ingress`` on ``port``, and the canary
    VirtualService bound to it and to the mesh, with the gateway's host."""
    gateway = yaml.safe_load((examples_dir("ingress") / "gateway.yaml").read_text())
    gateway["spec"]["servers"][0]["port"]["number"] = port
    (config / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    path = config / "virtual-service.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["hosts"].append(INGRESS_HOST)
    doc["spec"]["gateways"] = ["mesh", gateway["metadata"]["name"]]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def run_canary_demo(
    requests: int = 400, workdir: Path | None = None, say=_say, ingress: bool = False
) -> DemoResult:
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="controlplane-demo-")) if workdir is None else workdir
    config = root / "config"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(examples_dir(), config)
    vs_path = config / "virtual-service.yaml"
    gateway_port = free_port()
    if ingress:
        bind_to_gateway(config, gateway_port)
    write_weights(vs_path, *STEPS[0])
    for _, address in BACKENDS:
        if not port_is_free(address, BACKEND_PORT):
            raise RuntimeError(
                f"{address}:{BACKEND_PORT} is in use; stop whatever listens there and retry"
            )
    xds_port, debug_port, admin_port, outbound_port = (free_port() for _ in range(4))
    started: list[object] = []
    try:
        for name, address in BACKENDS:
            started.append(Backend(name, address, BACKEND_PORT).start())
        say(
            f"backends: reviews-v1 on {BACKENDS[0][1]}:{BACKEND_PORT}, reviews-v2 on {BACKENDS[1][1]}:{BACKEND_PORT}"
        )
        cp = ControlPlaneProcess(config, xds_port, debug_port, root / "controlplane.log")
        started.append(cp)
        cp.start()
        say(
            f"control plane: serving {config} (xDS 127.0.0.1:{xds_port}, debug http://127.0.0.1:{debug_port})"
        )
        bootstrap = render_bootstrap(
            node_id=NODE_ID,
            namespace="default",
            labels={"app": "productpage"},
            service_account="bookinfo-productpage",
            xds_port=xds_port,
            outbound_port=outbound_port,
            admin_port=admin_port,
        )
        envoy = EnvoyProcess(bootstrap, root, name="envoy-productpage")
        started.append(envoy)
        envoy.start()
        states = cp.debug.wait_synced(NODE_ID, timeout=30)
        start_to_ack = (max(s["acked_at"] for s in states.values()) - envoy.started_at) * 1000
        envoy.wait_live()
        say(
            f"envoy: sidecar outbound on 127.0.0.1:{outbound_port}, all four types ACKed {start_to_ack:.0f} ms after start"
        )
        node, port, host = NODE_ID, outbound_port, "reviews:9080"
        if ingress:
            gateway = EnvoyProcess(
                render_bootstrap(
                    node_id=GATEWAY_NODE_ID,
                    namespace="istio-system",
                    labels={"istio": "ingressgateway", "app": "istio-ingressgateway"},
                    service_account="istio-ingressgateway",
                    xds_port=xds_port,
                    admin_port=free_port(),
                    extra_metadata={"INTERCEPTION_MODE": "NONE"},
                ),
                root,
                name="envoy-ingressgateway",
            )
            started.append(gateway)
            gateway.start()
            states = cp.debug.wait_synced(GATEWAY_NODE_ID, timeout=30)
            gateway.wait_live()
            node, port, host = GATEWAY_NODE_ID, gateway_port, INGRESS_HOST
            say(
                f"envoy: ingress gateway (router) on 0.0.0.0:{gateway_port}, serving Gateway "
                f"reviews-gateway for {INGRESS_HOST}"
            )
        say(f"sending {requests} requests per step with Host: {host} to 127.0.0.1:{port}")
        results: list[StepResult] = []
        for i, (v1, v2) in enumerate(STEPS):
            latency: float | None = None
            if i > 0:
                before = states["rds"]["acked_version"]
                written = time.time()
                write_weights(vs_path, v1, v2)
                say(f"step {i + 1}/{len(STEPS)}: wrote weights {v1}/{v2} to {vs_path.name}")
                states = cp.debug.wait_synced(node, timeout=20, newer_than={"rds": before})
                latency = (states["rds"]["acked_at"] - written) * 1000
            else:
                say(f"step 1/{len(STEPS)}: initial weights {v1}/{v2}")
            counts = count_backends(port, host, requests)
            other = sum(n for name, n in counts.items() if name not in ("reviews-v1", "reviews-v2"))
            result = StepResult(
                (v1, v2), (counts["reviews-v1"], counts["reviews-v2"]), other, latency
            )
            results.append(result)
            obs = result.observed_percent
            ack = f", ACKed {latency:.0f} ms after the write" if latency is not None else ""
            say(f"  observed {obs[0]:.1f}/{obs[1]:.1f}{ack}")
        return DemoResult(results, start_to_ack)
    finally:
        for item in reversed(started):
            try:
                item.stop()  # type: ignore[attr-defined]
            except Exception as exc:  # keep cleaning up the rest
                print(f"cleanup: {exc}", file=sys.stderr)
        if own_workdir:
            shutil.rmtree(root, ignore_errors=True)


def format_table(result: DemoResult) -> str:
    lines = [
        "",
        f"{'step':>4}  {'intended v1/v2':>14}  {'observed v1/v2':>14}  {'errors':>6}  {'file write -> ACK':>17}",
    ]
    for i, step in enumerate(result.steps, start=1):
        obs = step.observed_percent
        ack = f"{step.ack_latency_ms:.0f} ms" if step.ack_latency_ms is not None else "(initial)"
        lines.append(
            f"{i:>4}  {step.intended[0]:>6}/{step.intended[1]:<7}  {obs[0]:>6.1f}/{obs[1]:<7.1f}  {step.other:>6}  {ack:>17}"
        )
    lines.append("")
    lines.append(
        f"median change -> ACK: {result.median_ack_latency_ms:.0f} ms; "
        f"Envoy start -> first full ACK: {result.envoy_start_to_ack_ms:.0f} ms"
    )
    return "\n".join(lines)


def run_demo(requests: int = 400, workdir: Path | None = None, ingress: bool = False) -> int:
    try:
        result = run_canary_demo(requests=requests, workdir=workdir, ingress=ingress)
    except KeyboardInterrupt:
        print("\ninterrupted; every process the demo started has been stopped", file=sys.stderr)
        return 130
    print(format_table(result))
    return 0


def add(commands: Commands) -> None:
    parser = command(commands, "demo", "run the canary demo with a real Envoy")
    parser.add_argument("--requests", type=int, default=400, help="requests per step")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument(
        "--ingress", action="store_true", help="send the traffic in through an ingress gateway"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(requests=args.requests, workdir=args.workdir, ingress=args.ingress)
