"""`controlplane sidecar`: the injected proxy's entry point (writes the bootstrap, runs Envoy).

The injected ``istio-proxy`` container runs the project image with this command. The Pod's
identity comes from the downward API (environment: POD_NAME, POD_NAMESPACE, INSTANCE_IP,
SERVICE_ACCOUNT; a file with the Pod's labels), the credential from the projected
service-account token. The token is sent as ``authorization: Bearer`` on the ADS stream and
its path is in the node metadata as ``SA_TOKEN_PATH``; the control plane may verify it with
a TokenReview. Envoy reads the token once, at start, so the entry stays as Envoy's parent and
hot-restarts it (``--restart-epoch``) whenever the kubelet renews the token file.

Metrics as Istio's proxy serves them: the bootstrap has Envoy's Prometheus listener (15090),
and a thread of this process serves the merged endpoint (15020: Envoy's statistics and, for
a sidecar whose Pod was annotated for scraping, the application's; see
``controlplane.inject.merged_metrics``). SIGTERM and SIGINT stop Envoy (every epoch), then
the endpoint, and the process exits with Envoy's code.

`controlplane gateway` is the same entry for a gateway Pod (``run_proxy`` with the node type).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.cli import command
from controlplane.compile.proxy import ON_DEMAND_METADATA
from controlplane.inject.bootstrap import (
    ENVOY_PROMETHEUS_PORT,
    STATUS_PORT,
    render_bootstrap,
    write_private,
)
from controlplane.inject.merged_metrics import MergedMetrics, MergedMetricsServer
from controlplane.inject.prometheus import SCRAPE_ENV, ScrapeConfigurationError, scrape_target

# The Pod annotation that opts its sidecar into on-demand delivery (VHDS and on-demand CDS
# over Delta xDS; see compile/vhds.py): "true" sets the node metadata ON_DEMAND.
ON_DEMAND_ANNOTATION = "proxy.controlplane.dev/on-demand"

if TYPE_CHECKING:
    from controlplane.cli import Commands


def parse_downward_labels(text: str) -> dict[str, str]:
    """The downward API's ``key="value"`` lines (values quoted and escaped) -> dict."""
    labels: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = str(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                value = value[1:-1]
        labels[key.strip()] = value
    return labels


def sidecar_bootstrap(
    env: Mapping[str, str],
    labels: Mapping[str, str],
    *,
    xds_address: str,
    xds_port: int,
    token: str | None,
    token_path: str | None,
    admin_port: int = 15000,
    proxy_type: str = "sidecar",
    annotations: Mapping[str, str] | None = None,
    prometheus_port: int | None = ENVOY_PROMETHEUS_PORT,
) -> dict[str, Any]:
    """The bootstrap for the Pod described by ``env`` (pure). ``proxy_type`` is the node id's
    first field: ``sidecar``, or ``router`` for a gateway (``controlplane gateway``). The
    Pod's ``annotations`` may opt a sidecar into on-demand delivery (``ON_DEMAND_ANNOTATION``),
    which needs Delta xDS."""
    pod = env.get("POD_NAME", "")
    namespace = env.get("POD_NAMESPACE", "default")
    ip = env.get("INSTANCE_IP", "")
    extra: dict[str, Any] = {"SA_TOKEN_PATH": token_path} if token_path else {}
    if proxy_type != "sidecar":
        extra["INTERCEPTION_MODE"] = "NONE"  # a gateway captures nothing: its ports are its own
    on_demand = (
        proxy_type == "sidecar"
        and str((annotations or {}).get(ON_DEMAND_ANNOTATION, "")).lower() == "true"
    )
    if on_demand:
        extra[ON_DEMAND_METADATA] = "true"
    return render_bootstrap(
        node_id=f"{proxy_type}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        labels=dict(labels),
        service_account=env.get("SERVICE_ACCOUNT") or "default",
        xds_port=xds_port,
        xds_address=xds_address,
        admin_port=admin_port,
        workload_name=pod,
        instance_ips=ip,
        extra_metadata=extra,
        xds_token=token,
        delta=on_demand,
        prometheus_port=prometheus_port,
    )


def write_bootstrap(
    *,
    xds_address: str,
    xds_port: int,
    token_path: Path,
    labels_path: Path,
    bootstrap_path: Path,
    admin_port: int,
    proxy_type: str = "sidecar",
    prometheus_port: int | None = ENVOY_PROMETHEUS_PORT,
) -> None:
    token = token_path.read_text().strip() if token_path.is_file() else None
    labels = parse_downward_labels(labels_path.read_text()) if labels_path.is_file() else {}
    # The injector mounts the annotations next to the labels (downward API).
    annotations_path = labels_path.parent / "annotations"
    annotations = (
        parse_downward_labels(annotations_path.read_text()) if annotations_path.is_file() else {}
    )
    bootstrap = sidecar_bootstrap(
        os.environ,
        labels,
        xds_address=xds_address,
        xds_port=xds_port,
        token=token,
        token_path=str(token_path),
        admin_port=admin_port,
        proxy_type=proxy_type,
        annotations=annotations,
        prometheus_port=prometheus_port,
    )
    bootstrap_path.parent.mkdir(parents=True, exist_ok=True)
    write_private(bootstrap_path, yaml.safe_dump(bootstrap, sort_keys=False))  # has the token


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino)


class EnvoySupervisor:
    """Runs Envoy and hot-restarts it (``--restart-epoch``) when the token file changes.

    The kubelet renews a projected token well before it expires by replacing the file; the
    token is in Envoy's bootstrap (the ADS stream's ``authorization`` header), so a renewed
    token needs a new Envoy. A hot restart hands the listeners over without dropping
    connections: the new epoch starts, the old one drains and exits.
    """

    def __init__(
        self,
        envoy: str,
        bootstrap_path: Path,
        token_path: Path,
        render: Callable[[], None],
        *,
        poll: float = 5.0,
        extra_args: Sequence[str] = ("--concurrency", "2"),
    ) -> None:
        self.envoy = envoy
        self.bootstrap_path = bootstrap_path
        self.token_path = token_path
        self.render = render
        self.poll = poll
        self.extra_args = list(extra_args)
        self.base_id_path = bootstrap_path.with_name("envoy.base-id")
        self.epoch = 0
        self.current: subprocess.Popen[bytes] | None = None
        self.retired: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()

    def _start(self) -> subprocess.Popen[bytes]:
        args = [self.envoy, "-c", str(self.bootstrap_path), "--restart-epoch", str(self.epoch)]
        if self.epoch == 0:
            args += ["--use-dynamic-base-id", "--base-id-path", str(self.base_id_path)]
        else:
            args += ["--base-id", self.base_id_path.read_text().strip()]
        args += ["--drain-time-s", "5", "--parent-shutdown-time-s", "10", *self.extra_args]
        return subprocess.Popen(args)

    def stop(self, *_: object) -> None:
        self._stop.set()
        for proc in [self.current, *self.retired]:
            if proc is not None and proc.poll() is None:
                proc.terminate()

    def run(self) -> int:
        """Until Envoy exits on its own or the supervisor is stopped; Envoy's exit code."""
        stamp = _stamp(self.token_path)
        self.current = self._start()
        while True:
            if self._stop.wait(self.poll):
                return self.current.wait()
            self.retired = [p for p in self.retired if p.poll() is None]
            code = self.current.poll()
            if code is not None:
                return code
            now = _stamp(self.token_path)
            if now != stamp and now is not None:
                stamp = now
                self.render()
                self.epoch += 1
                self.retired.append(self.current)
                self.current = self._start()


def _envoy() -> str:
    """The Envoy installed next to this Python (the image's venv), else the one on PATH."""
    beside = Path(sys.prefix) / "bin" / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("envoy") or "envoy"


def run_sidecar(
    *,
    xds_address: str,
    xds_port: int,
    token_path: Path,
    labels_path: Path,
    bootstrap_path: Path,
    admin_port: int = 15000,
    exec_envoy: bool = True,
    poll: float = 5.0,
    proxy_type: str = "sidecar",
    prometheus_port: int | None = ENVOY_PROMETHEUS_PORT,
    status_port: int | None = STATUS_PORT,
    env: Mapping[str, str] | None = None,
) -> int:
    """Write the bootstrap; then serve the merged metrics and run Envoy under the supervisor
    (unless ``exec_envoy`` is off). A port of 0 or None turns its endpoint off."""
    env = os.environ if env is None else env
    try:
        # Only a sidecar merges the application's metrics: a gateway has no application.
        app = scrape_target(env.get(SCRAPE_ENV)) if proxy_type == "sidecar" else None
    except ScrapeConfigurationError as exc:
        print(f"controlplane {proxy_type}: {exc}", file=sys.stderr)
        return 2

    def render() -> None:
        write_bootstrap(
            xds_address=xds_address,
            xds_port=xds_port,
            token_path=token_path,
            labels_path=labels_path,
            bootstrap_path=bootstrap_path,
            admin_port=admin_port,
            proxy_type=proxy_type,
            prometheus_port=prometheus_port or None,
        )

    render()
    if not exec_envoy:
        return 0
    supervisor = EnvoySupervisor(_envoy(), bootstrap_path, token_path, render, poll=poll)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    merged = None
    if status_port:
        metrics = MergedMetrics(prometheus_port or None, app)
        try:
            merged = MergedMetricsServer(metrics, status_port).start()
        except OSError as exc:  # before Envoy starts: the Pod restarts with the reason
            print(
                f"controlplane {proxy_type}: cannot serve merged metrics on port "
                f"{status_port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    try:
        return supervisor.run()
    finally:
        if merged is not None:
            merged.stop()


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of an in-pod proxy entry (`controlplane sidecar` and `gateway`)."""
    parser.add_argument("--xds-address", default="controlplane.istio-system.svc")
    parser.add_argument("--xds-port", type=int, default=15010)
    parser.add_argument(
        "--token-path", type=Path, default=Path("/var/run/secrets/tokens/istio-token")
    )
    parser.add_argument("--labels-path", type=Path, default=Path("/etc/istio/pod/labels"))
    parser.add_argument("--bootstrap-path", type=Path, default=Path("/etc/istio/proxy/envoy.yaml"))
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=ENVOY_PROMETHEUS_PORT,
        help="Envoy's statistics in Prometheus text at /stats/prometheus (0: off)",
    )
    parser.add_argument(
        "--status-port",
        type=int,
        default=STATUS_PORT,
        help="the merged metrics endpoint: Envoy's statistics, and a sidecar's application's "
        "metrics (ISTIO_PROMETHEUS_ANNOTATIONS) (0: off)",
    )
    parser.add_argument("--no-exec", action="store_true", help="write the bootstrap only")
    parser.add_argument("--token-poll", type=float, default=5.0, help="check the token every N s")


def run_proxy(args: argparse.Namespace, proxy_type: str) -> int:
    """The in-pod entry for a proxy of ``proxy_type`` (``sidecar`` or ``router``)."""
    return run_sidecar(
        xds_address=args.xds_address,
        xds_port=args.xds_port,
        token_path=args.token_path,
        labels_path=args.labels_path,
        bootstrap_path=args.bootstrap_path,
        admin_port=args.admin_port,
        exec_envoy=not args.no_exec,
        poll=args.token_poll,
        proxy_type=proxy_type,
        prometheus_port=args.prometheus_port,
        status_port=args.status_port,
    )


def add(commands: Commands) -> None:
    parser = command(commands, "sidecar", "(in an injected Pod) write the bootstrap, run Envoy")
    add_proxy_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_proxy(args, "sidecar")
