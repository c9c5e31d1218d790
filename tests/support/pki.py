"""Test-side PKI, built independently of ``controlplane.ca`` so that it can check it: CAs and
intermediates (``make_ca``), Istio's cacerts layout (``write_cacerts``), CSRs (``make_csr``),
and readers for what the CA and SDS hand out (``load_chain``, ``leaf_of``, ``uri_sans``). Used by
``tests/unit/ca`` and ``tests/unit/xds``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_chain(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def leaf_of(chain_pem: str) -> x509.Certificate:
    """The first (workload) certificate of a PEM chain."""
    return load_chain(chain_pem)[0]


def make_ca(
    common_name: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    is_ca: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate: self-signed when `issuer` is None, else signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_cacerts(
    directory: Path,
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    chain: list[x509.Certificate],
    roots: list[x509.Certificate],
) -> None:
    """Write Istio's four cacerts files, as an operator would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_text(pem(ca_cert))
    (directory / "ca-key.pem").write_text(key_pem(ca_key))
    (directory / "cert-chain.pem").write_text("".join(pem(c) for c in chain))
    (directory / "root-cert.pem").write_text("".join(pem(c) for c in roots))


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    sans: list[x509.GeneralName] | None = None,
    common_name: str = "ignored",
) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def uri_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def make_leaf(
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    dns_names: list[str] = (),  # type: ignore[assignment]
    common_name: str = "leaf",
    client: bool = False,
    valid_from: datetime | None = None,
    days: int = 30,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server (or, with ``client``, client) certificate signed by ``issuer``, valid from
    ``valid_from`` (default: an hour ago, real time: Envoy checks against its clock)."""
    issuer_cert, issuer_key = issuer
    start = valid_from or datetime.now(UTC) - timedelta(hours=1)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([usage or x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def current_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA valid now (``make_ca``'s defaults are around the fixed ``NOW``)."""
    now = datetime.now(UTC)
    return make_ca(
        common_name, not_before=now - timedelta(days=1), not_after=now + timedelta(days=90)
    )


def tls_secret_yaml(
    name: str,
    namespace: str,
    cert: x509.Certificate | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: x509.Certificate | None = None,
    *,
    generic: bool = False,
) -> str:
    """A credential Secret as an operator writes one (``kubectl create secret tls`` shape, or
    the generic ``cert``/``key``/``cacert`` keys), base64 ``data``."""
    import base64

    names = ("cert", "key", "cacert") if generic else ("tls.crt", "tls.key", "ca.crt")
    data = {}
    if cert is not None and key is not None:
        data[names[0]] = pem(cert)
        data[names[1]] = key_pem(key)
    if ca is not None:
        data[names[2]] = pem(ca)
    body = "\n".join(f"  {k}: {base64.b64encode(v.encode()).decode()}" for k, v in data.items())
    kind_type = "kubernetes.io/tls" if cert is not None and not generic else "Opaque"
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"type: {kind_type}\ndata:\n{body}\n"
    )


def served_subject(
    port: int, server_name: str, cafile: Path, host: str = "127.0.0.1"
) -> str | None:
    """The subject of the certificate a TLS server on ``host:port`` presents for SNI
    ``server_name``, verified against ``cafile``; None when no verified handshake completes
    (nothing listening, no matching filter chain, an untrusted or wrong certificate)."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if der is None:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
