from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from controlplane.ca import CertificateAuthority, Identity, IdentityMismatch, InvalidCSR
from tests.support.pki import NOW, load_chain, make_csr, uri_sans


@pytest.fixture(scope="module")
def client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_csr_key_is_certified_for_the_authenticated_identity(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    csr = make_csr(client_key, sans=[x509.UniformResourceIdentifier(reviews.spiffe_id)])

    signed = ca.sign_csr(csr, reviews, now=NOW)

    (leaf,) = load_chain(signed.cert_chain_pem)
    assert leaf.public_key() == client_key.public_key()
    assert uri_sans(leaf) == [reviews.spiffe_id]
    leaf.verify_directly_issued_by(load_chain(ca.root_certs_pem)[0])
    assert not hasattr(signed, "private_key_pem")


def test_csr_without_names_gets_the_authenticated_identity(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    signed = ca.sign_csr(make_csr(client_key).encode(), reviews, now=NOW)

    assert uri_sans(load_chain(signed.cert_chain_pem)[0]) == [reviews.spiffe_id]


def test_csr_subject_is_not_copied_into_the_certificate(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    signed = ca.sign_csr(make_csr(client_key, common_name="admin"), reviews, now=NOW)

    assert load_chain(signed.cert_chain_pem)[0].subject == x509.Name([])


def test_csr_asking_for_another_spiffe_id_is_refused_naming_both(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    other = "spiffe://cluster.local/ns/kube-system/sa/admin"
    csr = make_csr(client_key, sans=[x509.UniformResourceIdentifier(other)])

    with pytest.raises(IdentityMismatch) as refused:
        ca.sign_csr(csr, reviews, now=NOW)

    assert other in str(refused.value)
    assert f"authenticated as {reviews.spiffe_id}" in str(refused.value)


def test_csr_asking_for_its_own_and_another_spiffe_id_is_refused(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    csr = make_csr(
        client_key,
        sans=[
            x509.UniformResourceIdentifier(reviews.spiffe_id),
            x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/ratings"),
        ],
    )

    with pytest.raises(IdentityMismatch, match="sa/ratings"):
        ca.sign_csr(csr, reviews, now=NOW)


def test_csr_asking_for_dns_names_is_refused(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    csr = make_csr(
        client_key,
        sans=[x509.UniformResourceIdentifier(reviews.spiffe_id), x509.DNSName("example.com")],
    )

    with pytest.raises(InvalidCSR, match="example.com"):
        ca.sign_csr(csr, reviews, now=NOW)


def test_csr_whose_signature_does_not_verify_is_refused(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(make_csr(client_key).encode()).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)

    with pytest.raises(InvalidCSR, match="signature does not verify"):
        ca.sign_csr(tampered, reviews, now=NOW)


def test_text_that_is_not_a_csr_is_refused(ca: CertificateAuthority, reviews: Identity) -> None:
    with pytest.raises(InvalidCSR, match="not a PEM certificate signing request"):
        ca.sign_csr("hello", reviews, now=NOW)


def test_rsa_2048_csr_is_accepted_but_rsa_1024_is_refused(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    ca.sign_csr(make_csr(strong), reviews, now=NOW)
    with pytest.raises(InvalidCSR, match="1024 bits; at least 2048"):
        ca.sign_csr(make_csr(weak), reviews, now=NOW)


def test_csr_with_an_unsupported_key_type_is_refused(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, None)
        .public_bytes(serialization.Encoding.PEM)
    )

    with pytest.raises(InvalidCSR, match="Ed25519"):
        ca.sign_csr(csr, reviews, now=NOW)


def test_csr_certificate_lifetime_follows_the_request(
    ca: CertificateAuthority, reviews: Identity, client_key: ec.EllipticCurvePrivateKey
) -> None:
    signed = ca.sign_csr(make_csr(client_key), reviews, timedelta(hours=1), now=NOW)

    assert signed.not_after == NOW + timedelta(hours=1)
    assert load_chain(signed.cert_chain_pem)[0].not_valid_after_utc == signed.not_after
