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
