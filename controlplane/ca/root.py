"""A self-signed root for a control plane that was given none."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.ca.bundle import CABundle, certificates_to_pem, private_key_to_pem
from controlplane.ca.identity import DEFAULT_TRUST_DOMAIN, check_trust_domain

ROOT_LIFETIME = timedelta(days=3650)
# Hosts whose clocks lag the control plane's must still see the root as valid.
_ROOT_BACKDATE = timedelta(hours=1)


def create_root_bundle(
    now: datetime,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    lifetime: timedelta = ROOT_LIFETIME,
) -> CABundle:
    """Generate an ECDSA P-256 root valid for `lifetime` from `now`, as a `cacerts` bundle.

    The root signs workload certificates directly, so it is at once `ca-cert.pem`,
    `root-cert.pem` and the whole of `cert-chain.pem` (Istio's layout for a root CA).
    """
    check_trust_domain(trust_domain)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, "controlplane root CA"),
        ]
    )
    public_key = key.public_key()
    not_before = now.replace(microsecond=0) - _ROOT_BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now.replace(microsecond=0) + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificates_to_pem([cert])
    return CABundle(
        ca_cert_pem=cert_pem,
        ca_key_pem=private_key_to_pem(key),
        cert_chain_pem=cert_pem,
        root_cert_pem=cert_pem,
    )
