"""A real, throwaway Kubernetes API server (etcd + kube-apiserver) on loopback.

Importable without pytest::

    from tests.cluster.cluster import LocalCluster

    with LocalCluster() as cluster:
        cluster.kubectl("get", "namespaces")

What runs, and what does not:

* ``etcd`` and ``kube-apiserver`` (built by ``tests/cluster/build.sh`` from Go modules and cached
  in ``$CONTROLPLANE_K8S_CACHE`` or ``~/.cache/controlplane-k8s``), each bound to 127.0.0.1 on
  random free ports, with all state in a temporary directory.
* No kubelet, scheduler or kube-controller-manager: Pods are plain API objects (never scheduled,
  no IPs, no status unless a test writes one), Endpoints/EndpointSlices are whatever tests create,
  there is no garbage collector, no ServiceAccount controller and no namespace controller.
* The ServiceAccount admission plugin is disabled by default
  (``--disable-admission-plugins=ServiceAccount``). Without the ServiceAccount controller, no
  namespace gets a ``default`` ServiceAccount, and with the plugin on every Pod creation in such
  a namespace would fail. With it off, Pods are stored as written: ``spec.serviceAccountName`` is
  not defaulted and no token volume is added, so tests that care about a Pod's identity set
  ``serviceAccountName`` themselves. Pass ``service_account_admission=True`` to get the real
  behaviour; then create the ServiceAccount first (``ensure_service_account``).
  ``create_namespace`` (and so the ``kube_namespace`` fixture) creates the ``default``
  ServiceAccount either way.
* Deleting a namespace would leave it ``Terminating`` forever (no namespace controller), so
  ``delete_namespace`` does the controller's work: deletes every namespaced object in it, waits
  (bounded) for finalizers, then finalizes the namespace.
* Authentication: a client certificate (CN=controlplane-admin, O=system:masters) signed by a
  generated client CA. Authorization: RBAC. Admission webhooks (Mutating/Validating) are on, as in
  any default kube-apiserver; ``--enable-aggregator-routing`` makes the API server resolve
  webhook/APIService ``service`` references to endpoint addresses rather than cluster IPs.
* Processes are stopped by ``stop()``, by an ``atexit`` hook, and (Linux) by the kernel if the
  Python process dies (``PR_SET_PDEATHSIG``; see ``LocalCluster`` for the thread caveat).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from controlplane.testing.ports import free_port, port_is_free

__all__ = [
    "DEFAULT_K8S_VERSION",
    "BUILD_SCRIPT",
    "ClusterError",
    "KubectlError",
    "LocalCluster",
    "binaries_present",
    "bin_dir_for",
    "ensure_binaries",
]

DEFAULT_K8S_VERSION = "v1.35.4"
BUILD_SCRIPT = Path(__file__).resolve().with_name("build.sh")
_BINARIES = ("kube-apiserver", "kubectl", "etcd")


class ClusterError(RuntimeError):
    """The cluster could not be built, started or stopped."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        cmd = " ".join(self.cmd) if isinstance(self.cmd, (list, tuple)) else str(self.cmd)
        return (
            f"kubectl exited {self.returncode}: {cmd}\n"
            f"--- stderr ---\n{(self.stderr or '').strip()}\n"
            f"--- stdout ---\n{(self.output or '').strip()[:4000]}"
        )


# --------------------------------------------------------------------------------------------
# binaries


def _version() -> str:
    return os.environ.get("CONTROLPLANE_K8S_VERSION", DEFAULT_K8S_VERSION)


def bin_dir_for(version: str | None = None) -> Path:
    """Where build.sh puts the binaries for ``version`` (not necessarily built yet)."""
    root = os.environ.get("CONTROLPLANE_K8S_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "controlplane-k8s"
    )
    return Path(root) / (version or _version()) / "bin"


def binaries_present(version: str | None = None) -> bool:
    d = bin_dir_for(version)
    return (d / ".stamp").is_file() and all(os.access(d / b, os.X_OK) for b in _BINARIES)


def ensure_binaries(
    version: str | None = None, *, timeout: float = 3600.0, quiet: bool = False
) -> Path:
    """Return the bin dir with kube-apiserver, kubectl and etcd, running build.sh if needed.

    build.sh itself is idempotent and cheap when everything is cached, but it is only called
    when a binary is missing, so a cached run never needs Go.
    """
    version = version or _version()
    if binaries_present(version):
        return bin_dir_for(version)
    env = dict(os.environ, CONTROLPLANE_K8S_VERSION=version)
    if not quiet:
        print(
            f"[controlplane] building kube-apiserver/kubectl/etcd {version} "
            f"with {BUILD_SCRIPT} (first run only; several minutes)",
            file=sys.stderr,
            flush=True,
        )
    tail: collections.deque[str] = collections.deque(maxlen=40)
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def pump() -> None:  # progress to our stderr, and keep the end for the error message
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            if not quiet and not line.startswith("go: downloading"):
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise ClusterError(f"{BUILD_SCRIPT} did not finish within {timeout:.0f}s") from e
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    reader.join(timeout=5)
    out.seek(0)
    stdout = out.read()
    out.close()
    if proc.returncode != 0:
        raise ClusterError(
            f"{BUILD_SCRIPT} failed with exit code {proc.returncode}:\n" + "\n".join(tail)
        )
    lines = [ln for ln in (stdout or "").splitlines() if ln.strip()]
    bin_dir = Path(lines[-1].strip()) if lines else bin_dir_for(version)
    missing = [b for b in _BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ClusterError(f"{BUILD_SCRIPT} finished but {missing} missing in {bin_dir}")
    return bin_dir


# --------------------------------------------------------------------------------------------
# helpers


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


_WORKDIR_PREFIX = "controlplane-kube-"


def _remove_stale_workdirs() -> None:
    """Remove temp dirs left by clusters whose Python process was killed (SIGKILL: no atexit).

    Their processes are already gone (PR_SET_PDEATHSIG); only the files remain.
    """
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(_WORKDIR_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if owner == os.getpid():
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _make_pdeathsig():
    """A preexec_fn that asks the kernel to SIGKILL the child when its parent thread dies.

    libc is loaded here, in the parent: nothing but the prctl call happens after fork.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None
    sig = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


_PDEATHSIG = _make_pdeathsig()


class _Pki:
    """CA, serving certificate, admin client certificate and service-account key (files)."""

    def __init__(self, directory: Path, hosts_ips: list[str], hosts_dns: list[str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)

        # Serving CA + kube-apiserver serving certificate.
        self._ca_key, self._ca = self._make_ca("controlplane-test-ca")
        self.ca_cert = self._write_cert("ca.crt", self._ca)
        self.ca_key = self._write_key("ca.key", self._ca_key)
        self.serving_cert, self.serving_key = self.issue_server_cert(
            "apiserver", hosts_dns + hosts_ips
        )

        # Client CA + admin client certificate (group system:masters).
        self._cca_key, self._cca = self._make_ca("controlplane-test-client-ca")
        self.client_ca_cert = self._write_cert("client-ca.crt", self._cca)
        self.client_ca_key = self._write_key("client-ca.key", self._cca_key)
        key, cert = self._issue(
            self._cca_key,
            self._cca,
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "controlplane-admin"),
                ]
            ),
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        self.admin_cert = self._write_cert("admin.crt", cert)
        self.admin_key = self._write_key("admin.key", key)

        # Service-account token signing key (RS256).
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self._write_key("sa.key", sa_key)
        self.sa_pub = directory / "sa.pub"
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def issue_server_cert(self, name: str, hosts: list[str]) -> tuple[Path, Path]:
        """A serving certificate for ``hosts`` (DNS names or IPs) signed by the serving CA."""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        sans: list = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        key, cert = self._issue(
            self._ca_key,
            self._ca,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else name)]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans,
        )
        return self._write_cert(f"{name}.crt", cert), self._write_key(f"{name}.key", key)

    # -- internals --

    @staticmethod
    def _validity():
        now = datetime.datetime.now(datetime.UTC)
        return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def _write_key(self, name: str, key) -> Path:
        from cryptography.hazmat.primitives import serialization

        p = self.dir / name
        p.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        p.chmod(0o600)
        return p

    def _write_cert(self, name: str, cert) -> Path:
        from cryptography.hazmat.primitives import serialization

        p = self.dir / name
        p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return p

    @staticmethod
    def _key_usage(ca: bool):
        from cryptography import x509

        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    def _make_ca(self, cn: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        not_before, not_after = self._validity()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(self._key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def _issue(self, ca_key, ca_cert, subject, usage, sans=None):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = self._validity()
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self._key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())


# --------------------------------------------------------------------------------------------
# cluster

_live: set[LocalCluster] = set()  # strong refs: a forgotten cluster is still stopped at exit


@atexit.register
def _stop_all() -> None:
    for c in list(_live):
        with contextlib.suppress(Exception):
            c.stop()


class LocalCluster:
    """etcd + kube-apiserver on 127.0.0.1, started by the constructor (unless ``start=False``).

    Public attributes/properties: ``kubeconfig`` (path, str), ``server`` (``https://127.0.0.1:P``),
    ``ca_cert_path`` (serving CA, str), ``client_cert_path``/``client_key_path`` (admin),
    ``bin_dir`` (Path), ``kubectl_path`` (str), ``workdir`` (Path), ``etcd_endpoint``,
    ``apiserver_port``, ``service_account_issuer``, ``service_account_key_path`` (private signing
    key), ``start_seconds`` (constructor-to-ready time of the last start).

    The child processes get ``PR_SET_PDEATHSIG`` so they die with the *thread* that started them:
    start a cluster from a long-lived thread (the main thread, as pytest does), not a worker that
    exits, or pass ``die_with_parent=False``.
    """

    SERVICE_CIDR = "10.96.0.0/16"
    SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

    def __init__(
        self,
        *,
        bin_dir: str | os.PathLike | None = None,
        version: str | None = None,
        start: bool = True,
        ready_timeout: float = 120.0,
        service_account_admission: bool = False,
        extra_apiserver_args: list[str] | tuple[str, ...] = (),
        die_with_parent: bool = True,
        verbosity: int = 1,
    ) -> None:
        self._t0 = time.monotonic()
        self.version = version or _version()
        self._bin_dir_arg = Path(bin_dir) if bin_dir else None
        self.bin_dir: Path | None = self._bin_dir_arg
        self.ready_timeout = ready_timeout
        self.service_account_admission = service_account_admission
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.die_with_parent = die_with_parent
        self.verbosity = verbosity
        self.workdir: Path | None = None
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None
        self._lock = threading.RLock()
        self._logfiles: list = []
        self._ssl: ssl.SSLContext | None = None
        self.start_seconds: float | None = None
        self.apiserver_port = 0
        self.etcd_port = 0
        self.etcd_peer_port = 0
        if start:
            self.start()

    # -- public API -------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> str:
        return str(self._require_workdir() / "kubeconfig")

    @property
    def ca_cert_path(self) -> str:
        return str(self._pki.ca_cert)

    @property
    def client_cert_path(self) -> str:
        return str(self._pki.admin_cert)

    @property
    def client_key_path(self) -> str:
        return str(self._pki.admin_key)

    @property
    def service_account_issuer(self) -> str:
        return self.SERVICE_ACCOUNT_ISSUER

    @property
    def service_account_key_path(self) -> str:
        return str(self._pki.sa_key)

    @property
    def kubectl_path(self) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / "kubectl")

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running components, e.g. ``{"etcd": 1, "kube-apiserver": 2}``."""
        out = {}
        for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
            if proc is not None and proc.poll() is None:
                out[name] = proc.pid
        return out

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that should talk to this cluster (KUBECONFIG, PATH)."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = self.kubeconfig
        if self.bin_dir is not None:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> None:
        """Build binaries if needed, generate PKI, start etcd and kube-apiserver, wait ready."""
        with self._lock:
            if self._apiserver is not None:
                raise ClusterError("already started")
            t0 = time.monotonic()
            if self.bin_dir is None:
                self.bin_dir = ensure_binaries(self.version)
            _remove_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
            (self.workdir / "owner.pid").write_text(str(os.getpid()))
            _live.add(self)
            try:
                self._pki = _Pki(
                    self.workdir / "pki",
                    hosts_ips=["127.0.0.1", str(self._service_ip())],
                    hosts_dns=[
                        "localhost",
                        "kubernetes",
                        "kubernetes.default",
                        "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local",
                    ],
                )
                for attempt in range(3):
                    # Free ports are picked then released: another process may take one in
                    # between, so a start that fails to bind is retried on new ports.
                    ports: set[int] = set()
                    while len(ports) < 3:
                        ports.add(free_port())
                    self.etcd_port, self.etcd_peer_port, self.apiserver_port = sorted(ports)
                    self._write_kubeconfig()
                    self._start_etcd()
                    self._start_apiserver()
                    try:
                        self._wait_ready(self.ready_timeout, since=t0)
                        break
                    except ClusterError as e:
                        if "address already in use" not in str(e) or attempt == 2:
                            raise
                        self._stop_processes()
                        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)
            except BaseException:
                self.stop(keep_workdir=bool(os.environ.get("CONTROLPLANE_KEEP_CLUSTER_DIR")))
                raise
            self.start_seconds = time.monotonic() - t0

    def restart_apiserver(self, timeout: float | None = None) -> float:
        """Stop kube-apiserver and start it again on the same port and etcd data; wait ready.

        Returns the seconds the API server was unavailable (stop + start + ready).
        """
        with self._lock:
            if self._apiserver is None:
                raise ClusterError("not started")
            t0 = time.monotonic()
            self._terminate(self._apiserver, "kube-apiserver")
            self._apiserver = None
            deadline = time.monotonic() + 30
            while not port_is_free("127.0.0.1", self.apiserver_port):
                if time.monotonic() > deadline:
                    raise ClusterError(f"port {self.apiserver_port} still busy after stop")
                time.sleep(0.1)
            self._start_apiserver()
            self._wait_ready(timeout or self.ready_timeout, since=t0)
            return time.monotonic() - t0

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Terminate kube-apiserver, then etcd; remove the temp dir. Safe to call twice."""
        with self._lock:
            self._stop_processes()
            if self.workdir is not None and not keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            _live.discard(self)

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess:
        """Run this cluster's kubectl; text in/out. Raises KubectlError if ``check`` and rc != 0."""
        cmd = [
            self.kubectl_path,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self._require_workdir() / 'kubectl-cache'}",
            *[str(a) for a in args],
        ]
        if isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL if input is None else None,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def apply(self, manifest: str | dict | list, namespace: str | None = None) -> str:
        """``kubectl apply -f -`` of YAML text, a dict, or a list of dicts; returns stdout."""
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=manifest).stdout

    def get_json(self, *args: str) -> dict:
        """``kubectl get ARGS -o json`` parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        """Raw HTTPS request to the API server as admin. Returns (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for this cluster (imports the kubernetes package)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def ensure_service_account(self, namespace: str, name: str = "default") -> None:
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise ClusterError(f"creating ServiceAccount {namespace}/{name}: {status} {body}")

    def create_namespace(self, name: str | None = None, labels: dict | None = None) -> str:
        """Create a namespace (random name by default) with a ``default`` ServiceAccount."""
        name = name or f"test-{secrets.token_hex(4)}"
        meta: dict = {"name": name}
        if labels:
            meta["labels"] = labels
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
        status, body = self.request("POST", "/api/v1/namespaces", ns)
        if status != 201:
            raise ClusterError(f"creating namespace {name}: {status} {body}")
        self.ensure_service_account(name)
        return name

    def delete_namespace(self, name: str, timeout: float = 15.0) -> bool:
        """Delete a namespace the way the (absent) namespace controller would.

        Marks it for deletion, deletes every namespaced object in it, waits up to ``timeout`` for
        them to go (objects with finalizers need their controller, e.g. a running operator), then
        removes the namespace's ``kubernetes`` finalizer. If objects remain, the namespace is left
        ``Terminating`` (as on a real cluster) and False is returned.
        """
        status, _ = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if status == 404:
            return True
        kinds = self._namespaced_kinds()
        deadline = time.monotonic() + timeout
        while True:
            proc = self.kubectl(
                "delete",
                ",".join(kinds),
                "--all",
                "-n",
                name,
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )
            if proc.returncode != 0 and "the server doesn't have a resource type" in proc.stderr:
                if time.monotonic() > deadline:
                    return False
                kinds = self._namespaced_kinds()  # a CRD went away; rediscover
                continue
            left = self.kubectl(
                "get",
                ",".join(kinds),
                "-n",
                name,
                "-o",
                "name",
                "--ignore-not-found",
                check=False,
            )
            remaining = left.stdout.strip()
            if left.returncode == 0 and not remaining:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        status, ns = self.request("GET", f"/api/v1/namespaces/{name}")
        if status == 404:
            return True
        ns.setdefault("spec", {})["finalizers"] = []
        status, body = self.request("PUT", f"/api/v1/namespaces/{name}/finalize", ns)
        if status not in (200, 404):
            raise ClusterError(f"finalizing namespace {name}: {status} {body}")
        return True

    def issue_server_cert(self, name: str, hosts: list[str]) -> tuple[str, str]:
        """(cert path, key path) of a serving cert for ``hosts`` signed by ``ca_cert_path``.

        For webhook servers started by tests: put ``ca_bundle()`` in the webhook's caBundle.
        """
        cert, key = self._pki.issue_server_cert(name, hosts)
        return str(cert), str(key)

    def ca_bundle(self) -> str:
        """The serving CA certificate, base64-encoded (for ``caBundle`` fields)."""
        import base64

        return base64.b64encode(Path(self.ca_cert_path).read_bytes()).decode()

    def log_tail(self, component: str = "kube-apiserver", lines: int = 40) -> str:
        return _tail(self._require_workdir() / f"{component}.log", lines)

    def __enter__(self) -> LocalCluster:
        if self._apiserver is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalCluster {self.version} {self.server} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise ClusterError("cluster not started")
        return self.workdir

    def _service_ip(self):
        return next(ipaddress.ip_network(self.SERVICE_CIDR).hosts())

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "controlplane-test",
                    "cluster": {"server": self.server, "certificate-authority": self.ca_cert_path},
                }
            ],
            "users": [
                {
                    "name": "controlplane-admin",
                    "user": {
                        "client-certificate": self.client_cert_path,
                        "client-key": self.client_key_path,
                    },
                }
            ],
            "contexts": [
                {
                    "name": "controlplane-test",
                    "context": {"cluster": "controlplane-test", "user": "controlplane-admin"},
                }
            ],
            "current-context": "controlplane-test",
            "preferences": {},
        }
        path = Path(self.kubeconfig)
        path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        path.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self._require_workdir() / f"{name}.log", "ab")
        self._logfiles.append(log)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_PDEATHSIG if self.die_with_parent else None,
        )

    def _start_etcd(self) -> None:
        assert self.bin_dir is not None and self.workdir is not None
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_endpoint}",
                f"--advertise-client-urls={self.etcd_endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )

    def _apiserver_argv(self) -> list[str]:
        assert self.bin_dir is not None and self.workdir is not None
        pki = self._pki
        disabled = [] if self.service_account_admission else ["ServiceAccount"]
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--etcd-servers={self.etcd_endpoint}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.client_ca_cert}",
            f"--service-account-issuer={self.SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={self.SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--enable-aggregator-routing=true",
            # The `kubernetes` Service's Endpoints would point at 127.0.0.1, which Endpoints
            # validation rejects (every 10 s, in the log); nothing here routes to it anyway.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            f"--v={self.verbosity}",
        ]
        if disabled:
            argv.append(f"--disable-admission-plugins={','.join(disabled)}")
        return argv + self.extra_apiserver_args

    def _start_apiserver(self) -> None:
        self._apiserver = self._spawn("kube-apiserver", self._apiserver_argv())

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.ca_cert_path)
            ctx.load_cert_chain(self.client_cert_path, self.client_key_path)
            self._ssl = ctx
        return self._ssl

    def _wait_ready(self, timeout: float, since: float) -> None:
        deadline = since + timeout
        last = "no response"
        ready = False
        while time.monotonic() < deadline:
            for proc, name in ((self._etcd, "etcd"), (self._apiserver, "kube-apiserver")):
                if proc is not None and proc.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                if not ready:
                    status, body = self.request("GET", "/readyz", timeout=5)
                    ready = status == 200
                    last = f"/readyz {status}: {str(body)[-500:]}"
                if ready:
                    # The system namespaces are created by a post-start hook; don't hand out a
                    # cluster whose `default` namespace is still missing.
                    status, body = self.request("GET", "/api/v1/namespaces/default", timeout=5)
                    if status == 200:
                        return
                    last = f"namespace default: {status}"
            except (OSError, ssl.SSLError) as e:
                last = repr(e)
            time.sleep(0.1)
        raise ClusterError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}"
        )

    def _stop_processes(self) -> None:
        if self._apiserver is not None:
            self._terminate(self._apiserver, "kube-apiserver")
            self._apiserver = None
        if self._etcd is not None:
            self._terminate(self._etcd, "etcd")
            self._etcd = None
        for f in self._logfiles:
            with contextlib.suppress(Exception):
                f.close()
        self._logfiles = []

    def _terminate(self, proc: subprocess.Popen, name: str, grace: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)

    def _namespaced_kinds(self) -> list[str]:
        # Asked every time: tests add CustomResourceDefinitions.
        out = self.kubectl(
            "api-resources", "--namespaced=true", "--verbs=list,delete", "-o", "name"
        ).stdout.split()
        return sorted(set(out)) or ["all"]


def _main(argv: list[str]) -> int:
    """``python -m tests.cluster.cluster [seconds]``: start a cluster, print how to use it."""
    hold = float(argv[1]) if len(argv) > 1 else 0.0
    t0 = time.monotonic()
    with LocalCluster() as c:
        print(f"ready in {time.monotonic() - t0:.2f}s: {c.server}")
        print(f"export KUBECONFIG={c.kubeconfig} PATH={c.bin_dir}:$PATH")
        if hold:
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
