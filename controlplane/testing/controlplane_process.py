"""The control plane as a child process (`controlplane serve`), and a client of its debug port."""

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
from typing import Any


class DebugClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}"

    def get(self, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
            return json.loads(resp.read().decode())

    def proxy(self, node_id: str) -> dict[str, Any] | None:
        for proxy in self.get("/debug/syncz")["proxies"]:
            if proxy["node_id"] == node_id:
                return dict(proxy)
        return None

    def type_state(self, node_id: str, short_type: str) -> dict[str, Any]:
        proxy = self.proxy(node_id)
        if proxy is None:
            return {}
        return dict(proxy["types"].get(short_type, {}))

    def wait_synced(
        self,
        node_id: str,
        types: tuple[str, ...] = ("cds", "eds", "lds", "rds"),
        timeout: float = 20.0,
        newer_than: dict[str, str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Wait until the proxy ACKed the latest version of every type in ``types``.

        With ``newer_than`` (type -> version), also wait until the ACKed version differs.
        Returns the per-type states.
        """
        deadline = time.time() + timeout
        last: dict[str, Any] | None = None
        while time.time() < deadline:
            try:
                last = self.proxy(node_id)
            except (urllib.error.URLError, OSError):
                last = None
            if last is not None:
                states = last["types"]
                ok = all(states.get(t, {}).get("status") == "SYNCED" for t in types)
                if ok and newer_than:
                    ok = all(states[t]["acked_version"] != v for t, v in newer_than.items())
                if ok:
                    return {t: states[t] for t in types}
            time.sleep(0.01)
        raise TimeoutError(f"proxy {node_id} not synced within {timeout}s: {last}")


class ControlPlaneProcess:
    """`controlplane serve` on a directory, as a process of its own."""

    def __init__(
        self,
        config_dir: Path,
        xds_port: int,
        debug_port: int,
        log_path: Path,
        extra_args: list[str] | None = None,
        module: str = "controlplane",
    ) -> None:
        self.config_dir = config_dir
        self.xds_port = xds_port
        self.debug_port = debug_port
        self.log_path = log_path
        self.extra_args = extra_args or []
        # The module run with ``-m``: the command line, or a test's launcher around it.
        self.module = module
        self.process: subprocess.Popen[bytes] | None = None
        self.debug = DebugClient(debug_port)

    def start(self, timeout: float = 20.0) -> ControlPlaneProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.module,
                "serve",
                "--config-dir",
                str(self.config_dir),
                "--xds-port",
                str(self.xds_port),
                "--debug-port",
                str(self.debug_port),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"control plane exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.debug.base}/healthz", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise TimeoutError(f"control plane not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
