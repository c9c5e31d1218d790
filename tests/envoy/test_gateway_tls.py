"""TLS at an ingress gateway, with a real Envoy in router mode and real clients (curl, Python's
ssl): SIMPLE termination with a certificate from a Kubernetes Secret (``credentialName``),
MUTUAL (a client certificate required), PASSTHROUGH by SNI to a TLS backend, httpsRedirect,
a Secret rotated while the gateway runs, and a gateway of another namespace that does not get
the Secret. File mode with the mesh CA on: the gateway proves its identity with a token.

Addresses: gateway proxies 127.0.9.1-2, backends 127.0.9.10-11; the gateway listens on
0.0.0.0 on free ports (a Gateway's ``port.number``)."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.app import obtain_token
from controlplane.ca import CertificateAuthority, DirectoryKeyStore, Identity
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from tests.support import meshes, pki

HOST = "bookinfo.example.com"
MTLS_HOST = "mtls.example.com"
SECURE_HOST = "secure.example.com"
GATEWAY_NS = "istio-system"
GATEWAY_NODE = "router~127.0.9.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local"
OTHER_NODE = "router~127.0.9.2~other-gateway-1.other~other.svc.cluster.local"


@dataclass
class Ports:
    http: int
    https: int
    mtls: int
    passthrough: int
    other: int
    mesh: int
    app: int
    tls_app: int


@dataclass
class GatewayMesh:
    mesh: LocalMesh
    ca_dir: Path
    dir: Path
    ports: Ports
    gateway: Sidecar
    other: Sidecar
    ca: tuple[x509.Certificate, object]  # signs the gateway's server certificates
    client_ca: tuple[x509.Certificate, object]  # signs client certificates (MUTUAL)
    backend_ca: tuple[x509.Certificate, object]  # signs the passthrough backend's certificate

    def write_pem(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path


def gateway_yaml(p: Ports) -> str:
    return meshes.join(
        meshes.resource(
            "Gateway",
            "bookinfo-gateway",
            f"""
            selector: {{istio: ingressgateway}}
            servers:
            - port: {{number: {p.http}, name: http, protocol: HTTP}}
              hosts: ["{HOST}"]
              tls: {{httpsRedirect: true}}
            - port: {{number: {p.https}, name: https, protocol: HTTPS}}
              hosts: ["{HOST}"]
              tls: {{mode: SIMPLE, credentialName: bookinfo-cred}}
            - port: {{number: {p.mtls}, name: https-mtls, protocol: HTTPS}}
              hosts: ["{MTLS_HOST}"]
              tls: {{mode: MUTUAL, credentialName: mtls-cred}}
            - port: {{number: {p.mesh}, name: https-mesh, protocol: HTTPS}}
              hosts: ["{HOST}"]
              tls: {{mode: ISTIO_MUTUAL}}
            - port: {{number: {p.passthrough}, name: tls-passthrough, protocol: TLS}}
              hosts: ["{SECURE_HOST}"]
              tls: {{mode: PASSTHROUGH}}
            """,
        ),
        meshes.resource(
            "Gateway",
            "other-gateway",
            f"""
            selector: {{istio: other-gateway}}
            servers:
            - port: {{number: {p.other}, name: https, protocol: HTTPS}}
              hosts: ["{HOST}"]
              tls: {{mode: SIMPLE, credentialName: bookinfo-cred}}
            """,
        ),
        meshes.virtual_service(
            HOST,
            """
            hosts: [bookinfo.example.com, mtls.example.com]
            gateways: [bookinfo-gateway, other-gateway]
            http:
            - route:
              - destination: {host: productpage, port: {number: 9080}}
            """,
        ),
        meshes.virtual_service(
            SECURE_HOST,
            f"""
            gateways: [bookinfo-gateway]
            tls:
            - match: [{{sniHosts: [{SECURE_HOST}], port: {p.passthrough}}}]
              route:
              - destination: {{host: secure-backend, port: {{number: 8443}}}}
            """,
        ),
        meshes.service("productpage", 9080, target_port=p.app),
        meshes.pod("productpage-1", "127.0.9.10", app="productpage"),
        meshes.service("secure-backend", 8443, target_port=p.tls_app, port_name="https"),
        meshes.pod("secure-backend-1", "127.0.9.11", app="secure-backend"),
        meshes.pod(
            "ingressgateway-1",
            "127.0.9.1",
            labels={"istio": "ingressgateway"},
            namespace=GATEWAY_NS,
        ),
        meshes.pod(
            "other-gateway-1", "127.0.9.2", labels={"istio": "other-gateway"}, namespace="other"
        ),
    )


class TlsBackend:
    """An HTTPS server on loopback with its own certificate (the passthrough destination)."""

    def __init__(self, host: str, port: int, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"secure-backend says hello"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_gateway(
    mesh: LocalMesh,
    ca_dir: Path,
    node_id: str,
    namespace: str,
    labels: dict[str, str],
    account: str,
) -> Sidecar:
    token = obtain_token(ca_dir, namespace, account)
    return mesh.sidecar(
        node_id,
        namespace=namespace,
        labels=labels,
        service_account=account,
        xds_token=token,
        wait=False,
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayMesh]:
    workdir = tmp_path_factory.mktemp("gateway-tls")
    ca_dir = workdir / "ca"
    mesh = LocalMesh(workdir, control_plane_args=["--ca-dir", str(ca_dir)]).start()
    ports = Ports(
        *(free_port() for _ in range(6)), free_port("127.0.9.10"), free_port("127.0.9.11")
    )
    ca, client_ca, backend_ca = (
        pki.current_ca(n) for n in ("gateway root", "clients root", "backend root")
    )
    pems = workdir / "pems"
    pems.mkdir()
    backend_cert, backend_key = pki.make_leaf(
        backend_ca, dns_names=[SECURE_HOST], common_name="backend"
    )
    (pems / "backend.pem").write_text(pki.pem(backend_cert))
    (pems / "backend-key.pem").write_text(pki.key_pem(backend_key))
    tls_backend = TlsBackend(
        "127.0.9.11", ports.tls_app, pems / "backend.pem", pems / "backend-key.pem"
    )
    mesh.backend("productpage", "127.0.9.10", ports.app)
    mesh.write(
        "secrets.yaml",
        meshes.join(
            pki.tls_secret_yaml(
                "bookinfo-cred",
                GATEWAY_NS,
                *pki.make_leaf(ca, dns_names=[HOST], common_name="first"),
            ),
            pki.tls_secret_yaml(
                "mtls-cred",
                GATEWAY_NS,
                *pki.make_leaf(ca, dns_names=[MTLS_HOST], common_name="mtls"),
                client_ca[0],
            ),
        ),
    )
    mesh.write("gateway.yaml", gateway_yaml(ports))
    gateway = start_gateway(
        mesh, ca_dir, GATEWAY_NODE, GATEWAY_NS, {"istio": "ingressgateway"}, "ingressgateway"
    )
    other = start_gateway(
        mesh, ca_dir, OTHER_NODE, "other", {"istio": "other-gateway"}, "other-gateway"
    )
    for proxy in (gateway, other):
        mesh.debug.wait_synced(proxy.node_id, types=("cds", "eds", "lds", "rds"), timeout=30)
        proxy.envoy.wait_live()
    result = GatewayMesh(mesh, ca_dir, pems, ports, gateway, other, ca, client_ca, backend_ca)
    result.write_pem("ca.pem", pki.pem(ca[0]))
    result.write_pem("backend-ca.pem", pki.pem(backend_ca[0]))
    wait_until(lambda: served_subject(result, ports.https, HOST) is not None, "the HTTPS listener")
    try:
        yield result
    finally:
        tls_backend.stop()
        mesh.stop()


def wait_until(check, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def served_subject(gw: GatewayMesh, port: int, host: str) -> str | None:
    """The subject of the certificate the gateway presents for SNI ``host`` (verified
    against the gateway CA), or None when no TLS handshake completes."""
    return pki.served_subject(port, host, gw.dir / "ca.pem")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True, timeout=15
    )


def test_simple_tls_terminates_with_the_credential_secret_checked_by_curl_cacert(
    gw: GatewayMesh,
) -> None:
    port = gw.ports.https
    out = curl(
        "--cacert",
        str(gw.dir / "ca.pem"),
        "--resolve",
        f"{HOST}:{port}:127.0.0.1",
        "-w",
        "\n%{http_code}",
        f"https://{HOST}:{port}/productpage",
    )
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body)["name"] == "productpage"


def test_the_gateway_names_its_https_route_configuration_as_istiod_does(gw: GatewayMesh) -> None:
    dump = gw.gateway.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    names = {c["route_config"]["name"] for c in dump["configs"]}
    p = gw.ports
    assert {
        f"http.{p.http}",
        f"https.{p.https}.https.bookinfo-gateway.default",
        f"https.{p.mtls}.https-mtls.bookinfo-gateway.default",
    } <= names


def test_mutual_tls_needs_a_client_certificate_signed_by_the_credentials_ca(
    gw: GatewayMesh, tmp_path: Path
) -> None:
    port = gw.ports.mtls
    common = [
        "--cacert",
        str(gw.dir / "ca.pem"),
        "--resolve",
        f"{MTLS_HOST}:{port}:127.0.0.1",
        "-w",
        "\n%{http_code}",
    ]
    url = f"https://{MTLS_HOST}:{port}/productpage"
    refused = curl(*common, url)
    assert refused.returncode != 0 or not refused.stdout.endswith("200"), refused.stdout

    cert, key = pki.make_leaf(gw.client_ca, common_name="client", client=True)
    (tmp_path / "client.pem").write_text(pki.pem(cert))
    (tmp_path / "client-key.pem").write_text(pki.key_pem(key))
    accepted = curl(
        *common,
        "--cert",
        str(tmp_path / "client.pem"),
        "--key",
        str(tmp_path / "client-key.pem"),
        url,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.endswith("\n200")

    # A certificate from another CA is refused too.
    stranger, stranger_key = pki.make_leaf(pki.current_ca("stranger"), common_name="x", client=True)
    (tmp_path / "stranger.pem").write_text(pki.pem(stranger))
    (tmp_path / "stranger-key.pem").write_text(pki.key_pem(stranger_key))
    wrong = curl(
        *common,
        "--cert",
        str(tmp_path / "stranger.pem"),
        "--key",
        str(tmp_path / "stranger-key.pem"),
        url,
    )
    assert wrong.returncode != 0 or not wrong.stdout.endswith("200")


def mesh_get(gw: GatewayMesh, port: int, client: tuple[Path, Path] | None) -> str:
    """GET / over TLS to an ISTIO_MUTUAL server, trusting the mesh root (the gateway's
    certificate is its SPIFFE workload certificate, which names no host); the status line,
    or the error when the handshake or the request fails."""
    context = ssl.create_default_context(cafile=str(gw.ca_dir / "root-cert.pem"))
    context.check_hostname = False
    if client is not None:
        context.load_cert_chain(*client)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                peer = tls.getpeercert()
                tls.sendall(f"GET /productpage HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                line = tls.recv(4096).split(b"\r\n", 1)[0].decode()
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {exc}"
    sans = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
    assert sans == ["spiffe://cluster.local/ns/istio-system/sa/ingressgateway"], sans
    return line


def test_istio_mutual_admits_a_mesh_workload_certificate_and_refuses_a_client_without_one(
    gw: GatewayMesh, tmp_path: Path
) -> None:
    bundle = DirectoryKeyStore(gw.ca_dir).load()
    assert bundle is not None
    cert = CertificateAuthority(bundle).issue(Identity("cluster.local", "default", "sleep"))
    chain, key = tmp_path / "sleep.pem", tmp_path / "sleep-key.pem"
    chain.write_text(cert.cert_chain_pem)
    key.write_text(cert.private_key_pem)
    assert mesh_get(gw, gw.ports.mesh, (chain, key)) == "HTTP/1.1 200 OK"
    assert not mesh_get(gw, gw.ports.mesh, None).startswith("HTTP/1.1 200")


def test_passthrough_forwards_tls_by_sni_to_the_backend_that_terminates_it(gw: GatewayMesh) -> None:
    port = gw.ports.passthrough
    out = curl(
        "--cacert",
        str(gw.dir / "backend-ca.pem"),
        "--resolve",
        f"{SECURE_HOST}:{port}:127.0.0.1",
        f"https://{SECURE_HOST}:{port}/",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "secure-backend says hello"
    # An SNI no route names matches no filter chain: the connection is closed.
    other = curl(
        "-k",
        "--resolve",
        f"unknown.example.com:{port}:127.0.0.1",
        f"https://unknown.example.com:{port}/",
    )
    assert other.returncode != 0


def test_https_redirect_answers_301_to_https(gw: GatewayMesh) -> None:
    port = gw.ports.http
    out = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        f"Host: {HOST}",
        f"http://127.0.0.1:{port}/productpage",
    )
    status, location = out.stdout.split(" ", 1)
    assert status == "301"
    assert location.startswith(f"https://{HOST}") and location.endswith("/productpage")


def test_a_gateway_in_another_namespace_does_not_get_the_secret(gw: GatewayMesh) -> None:
    # Its Gateway names bookinfo-cred, but the Secret lives in istio-system, not in "other".
    dump = gw.other.envoy.admin_json("/config_dump")
    active = [
        s.get("name")
        for c in dump["configs"]
        if c.get("@type", "").endswith("SecretsConfigDump")
        for s in c.get("dynamic_active_secrets", [])
    ]
    assert "kubernetes://bookinfo-cred" not in active
    assert served_subject(gw, gw.ports.other, HOST) is None
    # The finding says why (CP0520, istioctl's IST0101), in the Gateway's status.
    status = {s["resource"]: s for s in gw.mesh.debug.get("/debug/status")}
    issues = status["Gateway default/other-gateway"]["issues"]
    assert any("CP0520" in i and "other/bookinfo-cred" in i for i in issues), issues
    assert status["Gateway default/other-gateway"]["accepted"]


def test_a_rotated_secret_is_served_without_restarting_the_gateway(gw: GatewayMesh) -> None:
    assert served_subject(gw, gw.ports.https, HOST) == "CN=first"
    pid = gw.gateway.envoy.process.pid
    rotated = pki.make_leaf(gw.ca, dns_names=[HOST], common_name="rotated")
    mtls_part = (gw.mesh.config_dir / "secrets.yaml").read_text().split("---\n", 1)[1]
    gw.mesh.write(
        "secrets.yaml",
        meshes.join(pki.tls_secret_yaml("bookinfo-cred", GATEWAY_NS, *rotated), mtls_part),
    )
    wait_until(
        lambda: served_subject(gw, gw.ports.https, HOST) == "CN=rotated", "the rotated certificate"
    )
    assert gw.gateway.envoy.process.pid == pid and gw.gateway.envoy.process.poll() is None
    # The rotation was a secret push, not a listener change: no listener was drained.
    assert gw.gateway.envoy.stat("listener_manager.listener_modified") == 0
    # The control plane said what changed, and never what the Secret holds.
    log = gw.mesh.control_plane.log_text()
    assert "credentials changed in namespace(s) istio-system" in log
    assert "PRIVATE KEY" not in log and "BEGIN CERTIFICATE" not in log


def test_the_gateways_tls_listeners_pass_envoy_validate(tmp_path: Path) -> None:
    """Every TLS shape of this module's Gateway (SIMPLE, MUTUAL, ISTIO_MUTUAL, PASSTHROUGH,
    httpsRedirect), compiled for the ingress gateway, passes the real ``envoy --mode
    validate`` (credential secrets stand in as static secrets of the same names)."""
    from controlplane.compile import SnapshotCompiler
    from controlplane.compile.proxy import proxy_from_node
    from controlplane.compile.resources import LISTENER
    from tests.envoy.validate import envoy_validate, static_bootstrap
    from tests.unit.compile.helpers import snapshot_of

    ports = Ports(8080, 8443, 9443, 9444, 9445, 15443, 9080, 8444)
    proxy = proxy_from_node(
        GATEWAY_NODE, {"NAMESPACE": GATEWAY_NS, "LABELS": {"istio": "ingressgateway"}}
    )
    resources = SnapshotCompiler(snapshot_of(gateway_yaml(ports))).compile(proxy)
    assert len(resources.of(LISTENER)) == 5
    result = envoy_validate(static_bootstrap(resources), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
