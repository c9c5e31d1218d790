from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.ca import CABundle, InvalidCABundle
from controlplane.ca.bundle import parse_bundle
from tests.support.pki import NOW, key_pem, make_ca, pem


def _intermediate_bundle() -> CABundle:
    root = make_ca("root")
    intermediate = make_ca("intermediate", issuer=root)
    return CABundle(
        ca_cert_pem=pem(intermediate[0]),
        ca_key_pem=key_pem(intermediate[1]),
        cert_chain_pem=pem(intermediate[0]) + pem(root[0]),
        root_cert_pem=pem(root[0]),
    )


def test_intermediate_bundle_signs_with_the_intermediate_and_trusts_the_root() -> None:
    bundle = _intermediate_bundle()

    material = parse_bundle(bundle, NOW)

    assert pem(material.cert) == bundle.ca_cert_pem
    assert [pem(c) for c in material.intermediates] == [bundle.ca_cert_pem]
    assert [pem(c) for c in material.roots] == [bundle.root_cert_pem]


def test_key_that_is_not_the_ca_certificates_is_rejected(root_bundle: CABundle) -> None:
    other_key = key_pem(ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(InvalidCABundle, match="ca-key.pem is not the private key of ca-cert.pem"):
        parse_bundle(replace(root_bundle, ca_key_pem=other_key), NOW)


def test_certificate_that_is_not_a_ca_is_rejected() -> None:
    cert, key = make_ca("leaf", is_ca=False)
    bundle = CABundle(pem(cert), key_pem(key), pem(cert), pem(cert))

    with pytest.raises(InvalidCABundle, match="not a CA certificate"):
        parse_bundle(bundle, NOW)


def test_chain_that_does_not_start_with_the_ca_certificate_is_rejected() -> None:
    bundle = _intermediate_bundle()

    with pytest.raises(InvalidCABundle, match="must start with"):
        parse_bundle(replace(bundle, cert_chain_pem=bundle.root_cert_pem), NOW)


def test_chain_in_the_wrong_order_is_rejected() -> None:
    root = make_ca("root")
    first = make_ca("first", issuer=root)
    second = make_ca("second", issuer=first)
    bundle = CABundle(
        ca_cert_pem=pem(second[0]),
        ca_key_pem=key_pem(second[1]),
        cert_chain_pem=pem(second[0]) + pem(root[0]) + pem(first[0]),
        root_cert_pem=pem(root[0]),
    )

    with pytest.raises(InvalidCABundle, match="out of order"):
        parse_bundle(bundle, NOW)


def test_chain_that_leads_to_another_root_is_rejected() -> None:
    bundle = _intermediate_bundle()
    stranger = pem(make_ca("stranger")[0])

    with pytest.raises(InvalidCABundle, match="does not lead to a root in root-cert.pem"):
        parse_bundle(
            replace(bundle, cert_chain_pem=bundle.ca_cert_pem, root_cert_pem=stranger), NOW
        )


def test_expired_ca_certificate_is_rejected() -> None:
    cert, key = make_ca("old", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(1))
    bundle = CABundle(pem(cert), key_pem(key), pem(cert), pem(cert))

    with pytest.raises(InvalidCABundle, match="ca-cert.pem is valid from .* not at"):
        parse_bundle(bundle, NOW)


def test_unreadable_pem_names_the_file(root_bundle: CABundle) -> None:
    with pytest.raises(InvalidCABundle, match="root-cert.pem"):
        parse_bundle(replace(root_bundle, root_cert_pem="garbage"), NOW)
    with pytest.raises(InvalidCABundle, match="ca-key.pem"):
        parse_bundle(replace(root_bundle, ca_key_pem="garbage"), NOW)


def test_ca_cert_file_with_two_certificates_is_rejected(root_bundle: CABundle) -> None:
    doubled = root_bundle.ca_cert_pem * 2

    with pytest.raises(InvalidCABundle, match="exactly one certificate, not 2"):
        parse_bundle(replace(root_bundle, ca_cert_pem=doubled), NOW)


def test_bundle_repr_does_not_show_the_key(root_bundle: CABundle) -> None:
    assert "PRIVATE KEY" not in repr(root_bundle)
