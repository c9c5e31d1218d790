"""The webhook serving certificate: right names, signed by the CA in the same Secret."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys

import yaml
from cryptography import x509

from controlplane.inject.certs import service_dns_names, webhook_certificates


def test_the_serving_certificate_names_the_service_and_is_signed_by_the_bundled_ca():
    ca_pem, cert_pem, key_pem = webhook_certificates("controlplane", "istio-system")
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "controlplane.istio-system.svc" in sans.get_values_for_type(x509.DNSName)
    assert sans.get_values_for_type(x509.DNSName) == service_dns_names(
        "controlplane", "istio-system"
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_tls_client_trusting_the_ca_accepts_the_server_certificate(tmp_path):
    ca_pem, cert_pem, key_pem = webhook_certificates("controlplane", "istio-system")
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=ca_pem.decode())
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(incoming, outgoing, server_hostname="controlplane.istio-system.svc")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # pump the handshake between the two in memory
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(outgoing.read())
        incoming.write(s_out.read())
    c.do_handshake()
    assert c.getpeercert()["subject"][0][0][1] == "controlplane.istio-system.svc"


def test_the_command_prints_a_tls_secret_for_the_deployment():
    out = subprocess.run(
        [sys.executable, "-m", "controlplane", "webhook-cert"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secret = yaml.safe_load(out)
    assert secret["metadata"] == {
        "name": "controlplane-webhook-tls",
        "namespace": "istio-system",
        "labels": {"app.kubernetes.io/part-of": "controlplane"},
    }
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert base64.b64decode(secret["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
