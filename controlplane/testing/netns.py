"""Pods as network namespaces, for testing transparent interception for real.

A ``NetnsLab`` is a private Linux bridge with an address in 10.0.0.0/8; each ``NetnsPod`` is a
network namespace (``ip netns``) joined to it by a veth pair, with its own loopback, a default
route through the bridge, and optionally:

- the iptables rules of the injector's init container (``controlplane redirect`` run inside it),
- a real Envoy running as UID 1337 (the owner match that keeps its own traffic out of capture),
- applications (HTTP or TCP echo servers, an HTTP client) that know nothing about the proxy,
- an ``/etc/hosts`` of its own (``/etc/netns/<name>/hosts``, which ``ip netns exec`` bind-mounts
  over /etc/hosts), so an app's ``http://reviews:9080`` resolves to the service VIP as
  cluster DNS would.

Every name starts with ``mesh`` and a random token; ``stop`` removes all of it (namespaces,
links, hosts files, the processes it started). Needs root, ``ip`` and ``iptables``.

The apps that run inside pods are in ``controlplane.testing.pod_apps``; ``NetnsPod.app``
builds their command lines.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.envoy import envoy_binary

PREFIX = "mesh"
# One record per running lab (its pid and what it created), for sweeping after a crash.
STATE_DIR = Path("/run/mesh-netns")
PROXY_UID = 1337
ADMIN_PORT = 15000
# Ports the harness itself needs to reach inside a pod, left out of inbound capture.
HARNESS_EXCLUDED_INBOUND = (ADMIN_PORT, 15020, 15021)


def missing_prerequisites() -> str | None:
    """Why this machine cannot run pods as namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    if shutil.which("iptables-restore") is None and not Path("/usr/sbin/iptables-restore").exists():
        return "needs iptables (apt-get install -y iptables)"
    return None


def ensure_iptables() -> None:
    """Install Debian's iptables package when it is missing (idempotent)."""
    if shutil.which("iptables-restore") or Path("/usr/sbin/iptables-restore").exists():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "iptables"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = _sh("ip", "-4", "-o", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_labs() -> list[str]:
    """Remove what labs of dead processes left behind; return their tokens."""
    swept: list[str] = []
    if not STATE_DIR.is_dir():
        return swept
    for record in sorted(STATE_DIR.iterdir()):
        try:
            state = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(state.get("pid", 0))):
            continue
        for netns, host_link in state.get("pods", []):
            if not str(netns).startswith(PREFIX):
                continue
            _sh("ip", "netns", "del", netns, check=False)
            _sh("ip", "link", "del", host_link, check=False)
            shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
        if str(state.get("bridge", "")).startswith(PREFIX):
            _sh("ip", "link", "del", state["bridge"], check=False)
        record.unlink(missing_ok=True)
        swept.append(record.name)
    return swept


class NetnsPod:
    """One pod: a network namespace on the lab's bridge."""

    def __init__(self, lab: NetnsLab, name: str, index: int, ip: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = f"{lab.prefix}-{lab.token}-{name}"
        self.ip = ip
        self.host_link = f"{lab.prefix}{lab.token}{index}h"
        self.pod_link = f"{lab.prefix}{lab.token}{index}p"
        self.envoy: subprocess.Popen[bytes] | None = None
        self.admin = f"http://{ip}:{ADMIN_PORT}"

    def create(self) -> NetnsPod:
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.pod_link)
        _sh("ip", "link", "set", self.pod_link, "netns", self.netns)
        _sh("ip", "link", "set", self.host_link, "master", self.lab.bridge, "up")
        ns = ("ip", "-n", self.netns)
        _sh(*ns, "addr", "add", f"{self.ip}/{self.lab.network.prefixlen}", "dev", self.pod_link)
        _sh(*ns, "link", "set", self.pod_link, "up")
        _sh(*ns, "link", "set", "lo", "up")
        _sh(*ns, "route", "add", "default", "via", self.lab.gateway)
        self.set_hosts({})
        return self

    # ---- running things inside ------------------------------------------------------------

    def command(self, argv: list[str], uid: int | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns]
        if uid is not None:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return prefix + argv

    def run(
        self, argv: list[str], timeout: float = 60.0, uid: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, uid),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, PYTHONPATH=self.lab.pythonpath),
        )

    def start(
        self, argv: list[str], log_name: str, uid: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in the pod (stopped with the lab)."""
        log = open(self.lab.workdir / f"{self.name}-{log_name}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            self.command(argv, uid),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=self.lab.pythonpath),
        )
        log.close()
        self.lab.processes.append(process)
        return process

    def start_app(self, argv: list[str], log_name: str = "app", timeout: float = 30.0) -> None:
        """Start an app that prints ``ready`` once it listens, and wait for that."""
        process = self.start(argv, log_name)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "ready" in self.log(log_name):
                return
            if process.poll() is not None:
                raise RuntimeError(f"{log_name} in {self.netns} exited:\n{self.log(log_name)}")
            time.sleep(0.05)
        raise TimeoutError(f"{log_name} in {self.netns} not ready:\n{self.log(log_name)}")

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def app(self, *args: str) -> list[str]:
        """``python -m controlplane.testing.pod_apps ARGS`` (serve-http, count-http, ...)."""
        return self.python("-m", "controlplane.testing.pod_apps", *args)

    def set_hosts(self, entries: dict[str, str]) -> None:
        """This pod's /etc/hosts: ``{name: address}`` plus localhost."""
        directory = Path("/etc/netns") / self.netns
        directory.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "0.0.0.0 any", f"{self.ip} {self.name}"]
        lines += [f"{address} {name}" for name, address in entries.items()]
        (directory / "hosts").write_text("\n".join(lines) + "\n")
        # No DNS server is reachable from a test pod: fail lookups at once instead of waiting
        # for timeouts (Python's HTTP server looks up its own address when it binds).
        (directory / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )

    def redirect(self, *extra: str) -> str:
        """Install the init container's capture rules; return what iptables now holds."""
        excluded = ",".join(str(p) for p in HARNESS_EXCLUDED_INBOUND)
        result = self.run(
            self.python(
                "-m",
                "controlplane",
                "redirect",
                "--proxy-uid",
                str(PROXY_UID),
                "--inbound-capture-port",
                "15006",
                "--outbound-capture-port",
                "15001",
                "--exclude-inbound-ports",
                excluded,
                *extra,
            )
        )
        if result.returncode != 0:
            raise RuntimeError(f"redirect in {self.netns} failed: {result.stderr}")
        return self.run(["iptables-save", "-t", "nat"]).stdout

    def start_envoy(
        self,
        xds_port: int,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        service_account: str = "default",
        **bootstrap_args: Any,
    ) -> str:
        """A transparent-mode sidecar for this pod, as UID 1337; returns its node id.

        ``bootstrap_args`` go to ``render_bootstrap`` (e.g. ``xds_token``)."""
        node_id = f"sidecar~{self.ip}~{self.name}.{namespace}~{namespace}.svc.cluster.local"
        bootstrap = render_bootstrap(
            node_id=node_id,
            namespace=namespace,
            labels=labels or {},
            service_account=service_account,
            xds_port=xds_port,
            xds_address=self.lab.gateway,
            admin_port=ADMIN_PORT,
            workload_name=self.name,
            instance_ips=self.ip,
            **bootstrap_args,
        )
        bootstrap["admin"]["address"]["socket_address"]["address"] = self.ip
        path = self.lab.workdir / f"{self.name}-envoy.yaml"
        path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        os.chmod(path, 0o644)
        self.envoy = self.start(
            [
                envoy_binary(),
                "-c",
                str(path),
                "--base-id-path",
                str(self.lab.workdir / f"{self.name}.base-id"),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
            ],
            "envoy",
            uid=PROXY_UID,
        )
        return node_id

    def wait_envoy_live(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.envoy is not None and self.envoy.poll() is not None:
                raise RuntimeError(f"envoy in {self.netns} exited:\n{self.log('envoy')}")
            try:
                if self.admin_get("/ready").strip() == "LIVE":
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy in {self.netns} not LIVE:\n{self.log('envoy')}")

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=2) as resp:
            return str(resp.read().decode())

    def stat(self, name: str) -> int:
        for line in self.admin_get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def log(self, name: str) -> str:
        try:
            return (self.lab.workdir / f"{self.name}-{name}.log").read_text(errors="replace")[
                -4000:
            ]
        except OSError:
            return "(no log)"

    def delete(self) -> None:
        _sh("ip", "netns", "del", self.netns, check=False)
        _sh("ip", "link", "del", self.host_link, check=False)
        shutil.rmtree(Path("/etc/netns") / self.netns, ignore_errors=True)


class NetnsLab:
    """A private bridge and the pods on it."""

    def __init__(self, workdir: Path | None = None, prefix: str = PREFIX) -> None:
        """``prefix`` starts every name (namespaces, links, the bridge): the branch's, so
        that concurrent labs of different branches never collide; at most 4 characters
        keeps link names within Linux's 15."""
        self.prefix = prefix
        self.token = secrets.token_hex(2)
        self.bridge = f"{prefix}{self.token}br"
        self.network = self._pick_network()
        hosts = list(self.network.hosts())
        self.gateway = str(hosts[0])
        self._next = 10
        self._hosts = hosts
        self.pods: list[NetnsPod] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{prefix}-netns-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Envoy runs as the proxy UID: it writes its logs and base-id here.
        os.chmod(self.workdir, 0o777)
        self.pythonpath = str(Path(__file__).resolve().parents[2])

    @staticmethod
    def _pick_network() -> ipaddress.IPv4Network:
        used = _used_networks()
        for _ in range(50):
            candidate = ipaddress.IPv4Network(
                f"10.{secrets.randbelow(40) + 200}.{secrets.randbelow(250) + 1}.0/24"
            )
            if not any(candidate.overlaps(n) for n in used):
                return candidate
        raise RuntimeError("no free 10.x /24 for the test bridge")

    def start(self) -> NetnsLab:
        sweep_stale_labs()
        self._record()
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        return self

    def pod(self, name: str) -> NetnsPod:
        ip = str(self._hosts[self._next])
        self._next += 1
        pod = NetnsPod(self, name, len(self.pods), ip)
        self.pods.append(pod)
        self._record()
        return pod.create()

    def _record(self) -> None:
        """What this lab created, so that a later lab can remove it if this process dies
        without cleaning up (a killed test run)."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "pid": os.getpid(),
            "bridge": self.bridge,
            "pods": [[p.netns, p.host_link] for p in self.pods],
        }
        (STATE_DIR / self.token).write_text(json.dumps(state))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for pod in self.pods:
            pod.delete()
        _sh("ip", "link", "del", self.bridge, check=False)
        (STATE_DIR / self.token).unlink(missing_ok=True)

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
