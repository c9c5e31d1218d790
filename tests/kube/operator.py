"""`controlplane run` against the test cluster, as a process of its own (the product's path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from controlplane.testing.controlplane_process import DebugClient
from controlplane.testing.ports import free_port
from tests.cluster.cluster import _PDEATHSIG, LocalCluster

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
PEERING_CRD = REPO / "manifests" / "kopf-peering.yaml"


def install_crds(cluster: LocalCluster) -> None:
    """The Istio CRDs, the Gateway API's standard-channel CRDs of the pinned release (from
    upstream, as users install them) and kopf's peering CRD, established (idempotent)."""
    from tests.cluster import gateway_api

    cluster.kubectl("apply", "-f", str(CRDS), "-f", str(PEERING_CRD))
    # Server-side, as upstream's install guide says: the HTTPRoute CRD is too large for the
    # last-applied annotation of a client-side apply.
    cluster.kubectl("apply", "--server-side", "-f", str(gateway_api.crd_dir()))
    # Right after creation a CRD may have no status.conditions yet, which `kubectl wait`
    # reports as an error rather than waiting on (seen on a loaded machine): try again.
    for attempt in range(20):
        proc = cluster.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=False
        )
        if proc.returncode == 0:
            return
        if attempt == 19 or "accessor error" not in proc.stderr:
            raise RuntimeError(f"CRDs not established: {proc.stderr}")
        time.sleep(0.25)


class OperatorProcess:
    """One replica of the operator with its xDS, debug and webhook ports on 127.0.0.1."""

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        name: str = "operator",
        webhooks: bool = True,
        extra_args: list[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.webhook_port = free_port()
        self.webhooks = webhooks
        self.extra_args = extra_args or []
        self.log_path = self.workdir / f"{name}.log"
        self.debug = DebugClient(self.debug_port)
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "controlplane",
            "run",
            "--kubeconfig",
            self.cluster.kubeconfig,
            "--host",
            "127.0.0.1",
            "--xds-port",
            str(self.xds_port),
            "--debug-port",
            str(self.debug_port),
            "--debounce",
            "0.05",
        ]
        if self.webhooks:
            cert, key = self.cluster.issue_server_cert(f"webhook-{self.name}", ["127.0.0.1"])
            args += [
                "--webhook-port",
                str(self.webhook_port),
                "--webhook-address",
                "127.0.0.1",
                "--webhook-host",
                "127.0.0.1",
                "--webhook-cert",
                cert,
                "--webhook-key",
                key,
                "--webhook-ca",
                self.cluster.ca_cert_path,
                "--manage-webhooks",
                "--webhook-resync",
                "1",
            ]
        return args + self.extra_args

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_PDEATHSIG,  # never outlive the test session, even if it is killed
        )
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.ready() and (not self.webhooks or self._webhook_configured()):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"operator not ready after {timeout}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.debug.base}/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _webhook_configured(self) -> bool:
        """Both webhook configurations point at this replica's webhook port."""
        for kind, name in (
            ("validatingwebhookconfiguration", "controlplane-validation"),
            ("mutatingwebhookconfiguration", "controlplane-sidecar-injector"),
        ):
            proc = self.cluster.kubectl("get", kind, name, "-o", "json", check=False)
            if proc.returncode != 0:
                return False
            hooks = json.loads(proc.stdout).get("webhooks", [])
            urls = [h["clientConfig"].get("url", "") for h in hooks]
            if not urls or not all(f":{self.webhook_port}/" in u for u in urls):
                return False
        return True

    def status(self) -> list[dict]:
        return list(self.debug.get("/debug/status"))

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition"):
        """Poll ``predicate()`` until it returns something truthy; return that."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = predicate()
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                last = None
            if last:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"{what} not reached in {timeout}s (last: {last!r}):\n{self.log_tail()}")

    def pause(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def remove_webhook_configurations(cluster: LocalCluster) -> None:
    """Leave the cluster as other tests expect it: no webhooks pointing at a stopped operator."""
    cluster.kubectl(
        "delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "-l", "app.kubernetes.io/part-of=controlplane", "--ignore-not-found",
    )  # fmt: skip
