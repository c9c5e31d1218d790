from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from controlplane.ca import (
    CABundle,
    CAError,
    CertificateAuthority,
    DirectoryKeyStore,
    Identity,
    IdentityMismatch,
)
from tests.support.pki import NOW, key_pem, leaf_of, load_chain, make_ca, pem, uri_sans


def test_first_start_creates_a_root_and_persists_it(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path / "cacerts")

    ca = CertificateAuthority.load_or_create(store, now=NOW)

    stored = store.load()
    assert stored is not None
    assert ca.root_certs_pem == stored.root_cert_pem


def test_loading_the_same_directory_twice_gives_the_same_root(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)
    second = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)

    assert second.root_certs_pem == first.root_certs_pem
    assert second.token_key == first.token_key


def test_root_subject_uses_the_configured_trust_domain(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(
        DirectoryKeyStore(tmp_path), trust_domain="mesh.example", now=NOW
    )

    assert "O=mesh.example" in ca.certificate.subject.rfc4514_string()


def test_workload_certificate_verifies_under_the_root(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    leaf = leaf_of(cert.cert_chain_pem)
    (root,) = load_chain(cert.root_certs_pem)
    leaf.verify_directly_issued_by(root)
    verifier = PolicyBuilder().store(Store([root])).time(NOW).build_client_verifier()
    assert verifier.verify(leaf, []).subjects == [
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/reviews")
    ]


def test_workload_certificate_carries_exactly_the_spiffe_id_as_a_critical_uri_san(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    leaf = leaf_of(cert.cert_chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/reviews")
    ]
    assert cert.spiffe_id == "spiffe://cluster.local/ns/default/sa/reviews"
    assert leaf.subject == x509.Name([])


def test_workload_key_is_ecdsa_p256_and_belongs_to_the_certificate(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    key = serialization.load_pem_private_key(cert.private_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf_of(cert.cert_chain_pem).public_key()


def test_workload_certificate_lasts_24_hours_from_a_start_backdated_for_clock_skew(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    leaf = leaf_of(cert.cert_chain_pem)
    assert leaf.not_valid_before_utc == cert.not_before == NOW - timedelta(minutes=1)
    assert leaf.not_valid_after_utc == cert.not_after == NOW + timedelta(hours=24)


def test_lifetime_is_configurable_per_ca_and_per_certificate(
    root_bundle: CABundle, reviews: Identity
) -> None:
    ca = CertificateAuthority(
        root_bundle, workload_ttl=timedelta(hours=2), clock_skew=timedelta(0), now=NOW
    )

    assert ca.issue(reviews, now=NOW).not_after == NOW + timedelta(hours=2)
    assert ca.issue(reviews, timedelta(minutes=10), now=NOW).not_after == NOW + timedelta(
        minutes=10
    )
    assert ca.issue(reviews, now=NOW).not_before == NOW


def test_lifetime_longer_than_the_maximum_is_shortened_to_it(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, timedelta(days=3650), now=NOW)

    assert cert.not_after == NOW + timedelta(days=90)


def test_non_positive_lifetime_is_refused(ca: CertificateAuthority, reviews: Identity) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        ca.issue(reviews, timedelta(0), now=NOW)


def test_workload_certificate_is_a_tls_leaf_for_both_client_and_server(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    leaf = leaf_of(ca.issue(reviews, now=NOW).cert_chain_pem)

    extensions = leaf.extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert not usage.key_cert_sign
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]


def test_chain_from_a_self_signed_root_is_the_leaf_alone(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    assert len(load_chain(cert.cert_chain_pem)) == 1
    assert ca.root_certs_pem not in cert.cert_chain_pem


def test_each_issue_has_a_new_key_and_serial(ca: CertificateAuthority, reviews: Identity) -> None:
    first, second = ca.issue(reviews, now=NOW), ca.issue(reviews, now=NOW)

    assert first.private_key_pem != second.private_key_pem
    assert first.serial_number != second.serial_number
    assert leaf_of(first.cert_chain_pem).serial_number == first.serial_number


def test_identity_of_another_trust_domain_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityMismatch, match="signs only for 'cluster.local'"):
        ca.issue(Identity("other.domain", "default", "reviews"), now=NOW)


def test_workload_certificate_never_outlives_the_ca(reviews: Identity) -> None:
    cert, key = make_ca("short", not_after=NOW + timedelta(hours=3))
    ca = CertificateAuthority(CABundle(pem(cert), key_pem(key), pem(cert), pem(cert)), now=NOW)

    assert ca.issue(reviews, now=NOW).not_after == NOW + timedelta(hours=3)
    with pytest.raises(CAError, match="expired"):
        ca.issue(reviews, now=NOW + timedelta(hours=4))


def test_repr_of_a_workload_certificate_does_not_reveal_its_key(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    assert "PRIVATE KEY" in cert.private_key_pem
    assert "PRIVATE KEY" not in repr(cert)


def test_naive_times_are_refused(ca: CertificateAuthority, reviews: Identity) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.issue(reviews, now=NOW.replace(tzinfo=None))


def test_certificate_uris_are_exactly_one(ca: CertificateAuthority, reviews: Identity) -> None:
    assert uri_sans(leaf_of(ca.issue(reviews, now=NOW).cert_chain_pem)) == [reviews.spiffe_id]
