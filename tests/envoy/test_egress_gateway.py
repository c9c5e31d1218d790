"""The pattern of Istio's egress samples (egress gateway with TLS origination), written here
for a server on loopback: a ServiceEntry for the external host, a Gateway on the egress
gateway, one VirtualService bound to the mesh and the gateway (sidecars send to the egress
gateway, the gateway sends on to the host's HTTPS port), and a DestinationRule that makes the
gateway originate TLS (SIMPLE, with the server's CA and SNI). The application speaks plain
HTTP; the external server only speaks TLS and records the SNI it was asked for."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.testing.backends import Backend
from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes
from tests.support.pki import make_ca, pem

HOST = "api.external.test"
EGRESS = "127.0.13.46"


def server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) files: a leaf for ``HOST`` signed by a test CA."""
    now = datetime.now(UTC)
    ca, ca_key = make_ca(
        "external test CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=30)
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_text(pem(ca))
    paths[1].write_text(pem(leaf))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def egress_config(https_port: int, gateway_port: int, ca_file: Path) -> str:
    return meshes.join(
        meshes.resource(
            "ServiceEntry",
            "external-api",
            f"""
            hosts: [{HOST}]
            location: MESH_EXTERNAL
            resolution: DNS
            ports:
            - {{number: 80, name: http-port, protocol: HTTP}}
            - {{number: 443, name: https-port, protocol: HTTPS}}
            endpoints: [{{address: localhost, ports: {{https-port: {https_port}}}}}]
            """,
        ),
        meshes.service(
            "istio-egressgateway",
            80,
            target_port=gateway_port,
            port_name="http2",
            app="istio-egressgateway",
            namespace="istio-system",
        ),
        meshes.pod(
            "istio-egressgateway-0",
            EGRESS,
            app="istio-egressgateway",
            labels={"istio": "egressgateway"},
            namespace="istio-system",
        ),
        meshes.resource(
            "Gateway",
            "istio-egressgateway",
            f"""
            selector: {{istio: egressgateway}}
            servers:
            - port: {{number: 80, name: http, protocol: HTTP}}
              hosts: [{HOST}]
            """,
        ),
        meshes.resource(
            "VirtualService",
            "direct-external-api-through-egress-gateway",
            f"""
            hosts: [{HOST}]
            gateways: [istio-egressgateway, mesh]
            http:
            - match: [{{gateways: [mesh], port: 80}}]
              route:
              - destination:
                  host: istio-egressgateway.istio-system.svc.cluster.local
                  port: {{number: 80}}
            - match: [{{gateways: [istio-egressgateway], port: 80}}]
              route:
              - destination: {{host: {HOST}, port: {{number: 443}}}}
            """,
        ),
        meshes.resource(
            "DestinationRule",
            "originate-tls-for-external-api",
            f"""
            host: {HOST}
            trafficPolicy:
              loadBalancer: {{simple: ROUND_ROBIN}}
              portLevelSettings:
              - port: {{number: 443}}
                tls: {{mode: SIMPLE, sni: {HOST}, caCertificates: {ca_file}}}
            """,
        ),
    )


def test_mesh_traffic_leaves_through_the_egress_gateway_which_originates_tls(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(tmp_path)
    try:
        ca_file, cert_file, key_file = server_certificate(tmp_path)
        https_port, gateway_port = free_port(), free_port()
        external = Backend("external-https", "127.0.0.1", https_port)
        # The external server speaks TLS only, and notes the server name each client asks for.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        asked: list[str | None] = []
        context.sni_callback = lambda sock, name, ctx: asked.append(name)  # type: ignore[assignment, misc, return-value]
        external._server.socket = context.wrap_socket(external._server.socket, server_side=True)
        mesh.backends.append(external.start())
        mesh.write("egress.yaml", egress_config(https_port, gateway_port, ca_file))
        mesh.start()
        gateway = mesh.gateway(
            "istio-egressgateway",
            labels={"istio": "egressgateway", "app": "istio-egressgateway"},
            address=EGRESS,
        )
        sidecar = mesh.sidecar(
            "sidecar~127.0.13.2~sleep.default~default.svc.cluster.local", labels={"app": "sleep"}
        )
        # The application asks for http://api.external.test/ in plain HTTP.
        assert count_backends(sidecar.outbound_port, HOST, 10) == {"external-https": 10}
        # Every request passed the egress gateway's listener, and left it over TLS with SNI.
        assert gateway.envoy.stat(f"http.outbound_0.0.0.0_{gateway_port}.downstream_rq_2xx") == 10
        assert gateway.envoy.stat(f"cluster.outbound|443||{HOST}.ssl.handshake") >= 1
        assert asked and set(asked) == {HOST}
        # The sidecar itself never connected to the external host: it only knows the gateway.
        assert sidecar.envoy.stat(f"cluster.outbound|443||{HOST}.upstream_cx_total") == 0
    finally:
        mesh.stop()
