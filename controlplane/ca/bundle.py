"""The CA's own key material in Istio's `cacerts` layout, and its validation.

A `CABundle` holds the four PEM files of the layout verbatim, so any store (a directory, a
Kubernetes Secret) can persist it key for key. `parse_bundle` is the one place that decides
whether a bundle can sign: key matches certificate, the certificate is a CA, and
`cert-chain.pem` links `ca-cert.pem` to a root in `root-cert.pem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from controlplane.ca.errors import InvalidCABundle

CA_CERT_FILE = "ca-cert.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_CHAIN_FILE = "cert-chain.pem"
ROOT_CERT_FILE = "root-cert.pem"


@dataclass(frozen=True)
class CABundle:
    """The four files of Istio's `cacerts` layout, as PEM text."""

    ca_cert_pem: str
    ca_key_pem: str = field(repr=False)
    cert_chain_pem: str
    root_cert_pem: str


@dataclass(frozen=True)
class SigningMaterial:
    """A validated bundle: what the CA signs with and what it hands out beside each leaf."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    intermediates: tuple[x509.Certificate, ...]
    """`ca-cert.pem` and the CAs above it, without roots: what follows a leaf in its chain."""
    roots: tuple[x509.Certificate, ...]
    """The trust bundle (`root-cert.pem`); several roots while a root is being rotated."""


def certificates_to_pem(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> str:
    """Concatenate certificates as PEM blocks."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def private_key_to_pem(key: CertificateIssuerPrivateKeyTypes | ec.EllipticCurvePrivateKey) -> str:
    """Unencrypted PKCS#8 PEM, the form Envoy and Istio read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> SigningHash:
    """The digest to sign with: matched to the curve for ECDSA, none for EdDSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        if key.curve.key_size > 256:
            return hashes.SHA384()
        return hashes.SHA256()
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def parse_bundle(bundle: CABundle, now: datetime) -> SigningMaterial:
    """Check that a bundle can sign at `now` and return its parsed parts.

    Raises InvalidCABundle naming the file at fault.
    """
    cert = _only_certificate(bundle.ca_cert_pem, CA_CERT_FILE)
    key = _private_key(bundle.ca_key_pem)
    chain = _certificates(bundle.cert_chain_pem, CERT_CHAIN_FILE)
    roots = _certificates(bundle.root_cert_pem, ROOT_CERT_FILE)

    if key.public_key() != cert.public_key():
        raise InvalidCABundle(f"{CA_KEY_FILE} is not the private key of {CA_CERT_FILE}")
    _require_ca(cert)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise InvalidCABundle(
            f"{CA_CERT_FILE} is valid from {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()}, not at {now.isoformat()}"
        )
    if chain[0] != cert:
        raise InvalidCABundle(
            f"{CERT_CHAIN_FILE} must start with the certificate in {CA_CERT_FILE}"
        )
    for child, parent in zip(chain, chain[1:], strict=False):
        if not _issued_by(child, parent):
            raise InvalidCABundle(
                f"{CERT_CHAIN_FILE} is out of order: {child.subject.rfc4514_string()!r} is not "
                f"signed by the next certificate, {parent.subject.rfc4514_string()!r}"
            )
    top = chain[-1]
    if top not in roots and not any(_issued_by(top, root) for root in roots):
        raise InvalidCABundle(
            f"{CERT_CHAIN_FILE} does not lead to a root in {ROOT_CERT_FILE}: nothing there "
            f"signed {top.subject.rfc4514_string()!r}"
        )
    intermediates = tuple(c for c in chain if c not in roots)
    return SigningMaterial(cert=cert, key=key, intermediates=intermediates, roots=tuple(roots))


def _certificates(pem: str, filename: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidCABundle(f"{filename} does not hold PEM certificates: {exc}") from exc
    if not certs:
        raise InvalidCABundle(f"{filename} holds no certificate")
    return certs


def _only_certificate(pem: str, filename: str) -> x509.Certificate:
    certs = _certificates(pem, filename)
    if len(certs) != 1:
        raise InvalidCABundle(f"{filename} must hold exactly one certificate, not {len(certs)}")
    return certs[0]


def _private_key(pem: str) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidCABundle(
            f"{CA_KEY_FILE} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(
        key,
        (
            ec.EllipticCurvePrivateKey,
            rsa.RSAPrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
        ),
    ):
        raise InvalidCABundle(f"{CA_KEY_FILE} holds a {type(key).__name__}, which cannot sign")
    return key


def _require_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidCABundle(f"{CA_CERT_FILE} is not a CA certificate (basicConstraints CA:true)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise InvalidCABundle(f"{CA_CERT_FILE} lacks the keyCertSign key usage")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
