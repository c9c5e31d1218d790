from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.ca import CABundle, InvalidIdentity
from controlplane.ca.root import create_root_bundle
from tests.support.pki import NOW, load_chain


def test_root_is_a_p256_ca_allowed_to_sign_certificates(root_bundle: CABundle) -> None:
    (root,) = load_chain(root_bundle.ca_cert_pem)

    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    root.verify_directly_issued_by(root)


def test_root_is_valid_for_ten_years_from_now(root_bundle: CABundle) -> None:
    (root,) = load_chain(root_bundle.ca_cert_pem)

    assert root.not_valid_after_utc == NOW + timedelta(days=3650)
    assert NOW - timedelta(hours=2) < root.not_valid_before_utc <= NOW


def test_root_subject_organization_is_the_trust_domain() -> None:
    (root,) = load_chain(create_root_bundle(NOW, trust_domain="mesh.example").ca_cert_pem)

    organization = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in organization] == ["mesh.example"]


def test_self_signed_root_is_ca_cert_chain_and_trust_bundle_at_once(
    root_bundle: CABundle,
) -> None:
    assert root_bundle.cert_chain_pem == root_bundle.ca_cert_pem
    assert root_bundle.root_cert_pem == root_bundle.ca_cert_pem


def test_invalid_trust_domain_is_refused_before_generating_anything() -> None:
    with pytest.raises(InvalidIdentity):
        create_root_bundle(NOW, trust_domain="Not A Domain")


def test_two_roots_have_different_keys() -> None:
    assert create_root_bundle(NOW).ca_key_pem != create_root_bundle(NOW).ca_key_pem
