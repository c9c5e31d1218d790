"""A small zero-trust mesh with real Envoys, shared by the mTLS and authorization tests.

Four workloads, each with its own service account, Service, app and sidecar (local mode):
``payment`` (the server the policies protect), and the clients ``order-service``,
``refund-service`` and ``web``. Every sidecar proves its identity with a token that
``controlplane bootstrap --ca-dir`` signs, and gets its certificate over SDS. Pod addresses
are 127.0.7.x, apps listen on 127.0.7.1xx.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from controlplane.app import obtain_token
from controlplane.ca import CertificateAuthority, DirectoryKeyStore, Identity
from controlplane.testing.backends import Backend
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, echo_once
from controlplane.testing.traffic import send
from tests.support import meshes

WORKLOADS = {
    # name: (pod address, app address)
    "payment": ("127.0.7.10", "127.0.7.110"),
    "order-service": ("127.0.7.11", "127.0.7.111"),
    "refund-service": ("127.0.7.12", "127.0.7.112"),
    "web": ("127.0.7.13", "127.0.7.113"),
}
PAYMENT_POLICY = meshes.resource(
    "AuthorizationPolicy",
    "payment",
    """
  selector: {matchLabels: {app: payment}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/default/sa/order-service
        - cluster.local/ns/default/sa/refund-service
    to:
    - operation:
        methods: [POST]
        paths: [/api/v1/charge, /api/v1/refund]
""",
)


def peer_authentication(mode: str, name: str = "default", namespace: str = "default") -> str:
    return f"""
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      mtls: {{mode: {mode}}}
    """


def workloads_yaml(app_port: int, tcp_port: int) -> str:
    """Every workload serves HTTP on service port 9080; payment also TCP on 7000."""
    docs = []
    for name, (pod, _) in WORKLOADS.items():
        tcp = (
            f", {{name: tcp-ledger, port: 7000, targetPort: {tcp_port}}}"
            if name == "payment"
            else ""
        )
        docs.append(f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: {app_port}}}{tcp}]
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}-1
  namespace: default
  labels: {{app: {name}, security.istio.io/tlsMode: istio}}
spec: {{serviceAccountName: {name}}}
status: {{podIP: {pod}}}
""")
    return "---".join(docs)


def node_id(name: str) -> str:
    return f"sidecar~{WORKLOADS[name][0]}~{name}-1.default~default.svc.cluster.local"


def bootstrap_token(ca_dir: Path, namespace: str, service_account: str, out: Path) -> str:
    """A token the way an operator gets one: ``controlplane bootstrap --ca-dir``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "bootstrap",
            "--node-id",
            f"sidecar~127.0.7.250~{service_account}.{namespace}~{namespace}.svc.cluster.local",
            "--namespace",
            namespace,
            "--service-account",
            service_account,
            "--ca-dir",
            str(ca_dir),
            "--token-file",
            str(out),
            "-o",
            str(out.with_suffix(".yaml")),
        ],
        check=True,
        timeout=30,
    )
    return out.read_text().strip()


@dataclass
class ZeroTrustMesh:
    mesh: LocalMesh
    ca_dir: Path
    app_port: int
    sidecars: dict[str, Sidecar]
    apps: dict[str, Backend]
    tcp_port: int  # payment's TCP target port (its ledger echo server)
    ledger_ports: dict[str, int]  # client -> its local port to payment:7000

    def ledger(self, client: str) -> str:
        """One line to payment's TCP port through ``client``'s sidecar; "" when refused."""
        try:
            return echo_once("127.0.0.1", self.ledger_ports[client], "hello")
        except OSError:
            return ""

    def call(
        self, client: str, method: str, path: str, server: str = "payment"
    ) -> tuple[int, bytes]:
        status, _, body = send(
            self.sidecars[client].outbound_port, f"{server}:9080", path, method=method
        )
        return status, body

    def write(self, name: str, text: str) -> None:
        """Write a config file and wait until every sidecar ACKed the result."""
        before = {
            n: self.mesh.debug.type_state(s.node_id, "lds").get("acked_version")
            for n, s in self.sidecars.items()
        }
        self.mesh.write(name, text)
        self.wait_pushed(before)

    def remove(self, name: str) -> None:
        before = {
            n: self.mesh.debug.type_state(s.node_id, "lds").get("acked_version")
            for n, s in self.sidecars.items()
        }
        self.mesh.remove(name)
        self.wait_pushed(before)

    def wait_pushed(self, before: dict[str, str | None], timeout: float = 15.0) -> None:
        """Wait until the server's listeners moved past ``before`` and every sidecar is synced;
        clients' listeners may not change, so only the server's version is required to move."""
        payment = self.sidecars["payment"]
        self.mesh.debug.wait_synced(
            payment.node_id,
            types=("cds", "eds", "lds", "rds", "sds"),
            timeout=timeout,
            newer_than={"lds": before["payment"] or ""},
        )
        for sidecar in self.sidecars.values():
            self.mesh.debug.wait_synced(
                sidecar.node_id, types=("cds", "eds", "lds", "sds"), timeout=timeout
            )
        # Connections accepted by a replaced filter chain keep its old policy until Envoy has
        # drained them (--drain-time-s 1): wait for that, so the next request sees the new one.
        deadline = time.time() + timeout
        envoy = payment.envoy
        while time.time() < deadline:
            if (
                envoy.stat("listener_manager.total_filter_chains_draining") == 0
                and envoy.stat("listener_manager.total_listeners_draining") == 0
            ):
                break
            time.sleep(0.05)

    def client_certificate(self, tmp: Path, service_account: str = "tester") -> tuple[Path, Path]:
        """A workload certificate of the mesh for a test client that has no sidecar."""
        bundle = DirectoryKeyStore(self.ca_dir).load()
        assert bundle is not None
        ca = CertificateAuthority(bundle)
        cert = ca.issue(Identity("cluster.local", "default", service_account))
        chain, key = tmp / f"{service_account}.pem", tmp / f"{service_account}-key.pem"
        chain.write_text(cert.cert_chain_pem)
        key.write_text(cert.private_key_pem)
        return chain, key

    @property
    def root_cert(self) -> Path:
        return self.ca_dir / "root-cert.pem"


def start_zero_trust_mesh(workdir: Path, extra_args: list[str] | None = None) -> ZeroTrustMesh:
    ca_dir = workdir / "ca"
    mesh = LocalMesh(workdir, control_plane_args=["--ca-dir", str(ca_dir), *(extra_args or [])])
    mesh.start()
    app_port, tcp_port = free_port("127.0.7.110"), free_port("127.0.7.110")
    mesh.write("workloads.yaml", workloads_yaml(app_port, tcp_port))
    apps = {name: mesh.backend(name, app, app_port) for name, (_, app) in WORKLOADS.items()}
    ledger = TcpEchoBackend("ledger", WORKLOADS["payment"][1], tcp_port).start()
    mesh.backends.append(ledger)  # type: ignore[arg-type]  (stopped with the mesh)
    ledger_ports = {name: free_port() for name in WORKLOADS if name != "payment"}
    sidecars: dict[str, Sidecar] = {}
    tokens = Path(tempfile.mkdtemp(dir=workdir, prefix="tokens-"))
    for name, (_, app) in WORKLOADS.items():
        if name == "payment":  # the operator's way, once; the same function for the rest
            token = bootstrap_token(ca_dir, "default", name, tokens / f"{name}.token")
        else:
            token = obtain_token(ca_dir, "default", name)
        sidecars[name] = mesh.sidecar(
            node_id(name),
            labels={"app": name},
            service_account=name,
            app_address=app,
            xds_token=token,
            tcp_ports=f"payment:7000={ledger_ports[name]}" if name in ledger_ports else "",
            wait=False,
        )
    for sidecar in sidecars.values():
        mesh.debug.wait_synced(
            sidecar.node_id, types=("cds", "eds", "lds", "rds", "sds"), timeout=30
        )
        sidecar.envoy.wait_live()
    return ZeroTrustMesh(mesh, ca_dir, app_port, sidecars, apps, tcp_port, ledger_ports)


# ---- on the wire ------------------------------------------------------------------------------


def plaintext_exchange(host: str, port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes over plain TCP; return whatever comes back before the peer closes
    (empty when the server hangs up without answering)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except ConnectionResetError:
            pass
        return received


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def served_certificate(
    host: str, port: int, root: Path, client_cert: tuple[Path, Path]
) -> x509.Certificate:
    """The leaf certificate a TLS server presents, verified against ``root``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE identities are URIs, not host names
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(root))
    context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    # A mesh client's ALPN: under PERMISSIVE, other TLS goes through to the app untouched.
    context.set_alpn_protocols(["istio-peer-exchange", "istio"])
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)
