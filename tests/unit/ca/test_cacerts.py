"""An operator's own CA in Istio's cacerts layout: root -> intermediate -> workloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from controlplane.ca import CertificateAuthority, DirectoryKeyStore, Identity, InvalidCABundle
from tests.support.pki import NOW, load_chain, make_ca, uri_sans, write_cacerts


@pytest.mark.parametrize("chain_includes_root", [True, False])
def test_operator_intermediate_signs_leaves_that_chain_to_the_operator_root(
    tmp_path: Path, reviews: Identity, chain_includes_root: bool
) -> None:
    root, root_key = make_ca("operator root")
    intermediate, intermediate_key = make_ca("operator intermediate", issuer=(root, root_key))
    chain = [intermediate, root] if chain_includes_root else [intermediate]
    write_cacerts(
        tmp_path, ca_cert=intermediate, ca_key=intermediate_key, chain=chain, roots=[root]
    )

    ca = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)
    cert = ca.issue(reviews, now=NOW)

    leaf, *rest = load_chain(cert.cert_chain_pem)
    assert rest == [intermediate]
    assert load_chain(cert.root_certs_pem) == [root]
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert uri_sans(leaf) == [reviews.spiffe_id]
    verifier = PolicyBuilder().store(Store([root])).time(NOW).build_client_verifier()
    assert verifier.verify(leaf, rest).chain == [leaf, intermediate, root]


def test_operator_cacerts_are_used_as_found_and_never_rewritten(
    tmp_path: Path, reviews: Identity
) -> None:
    root, root_key = make_ca("operator root")
    intermediate, intermediate_key = make_ca("operator intermediate", issuer=(root, root_key))
    write_cacerts(
        tmp_path, ca_cert=intermediate, ca_key=intermediate_key, chain=[intermediate], roots=[root]
    )
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}

    CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW).issue(
        reviews, now=NOW
    )

    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_two_level_intermediates_are_all_sent_in_order(tmp_path: Path, reviews: Identity) -> None:
    root = make_ca("root")
    regional = make_ca("regional", issuer=root)
    cluster = make_ca("cluster", issuer=regional)
    write_cacerts(
        tmp_path,
        ca_cert=cluster[0],
        ca_key=cluster[1],
        chain=[cluster[0], regional[0], root[0]],
        roots=[root[0]],
    )

    cert = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW).issue(
        reviews, now=NOW
    )

    assert load_chain(cert.cert_chain_pem)[1:] == [cluster[0], regional[0]]


def test_trust_bundle_with_two_roots_is_handed_out_whole(tmp_path: Path, reviews: Identity) -> None:
    old_root = make_ca("old root")[0]
    root, root_key = make_ca("new root")
    intermediate, intermediate_key = make_ca("intermediate", issuer=(root, root_key))
    write_cacerts(
        tmp_path,
        ca_cert=intermediate,
        ca_key=intermediate_key,
        chain=[intermediate, root],
        roots=[old_root, root],
    )

    cert = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW).issue(
        reviews, now=NOW
    )

    assert load_chain(cert.root_certs_pem) == [old_root, root]
    assert load_chain(cert.cert_chain_pem)[1:] == [intermediate]


def test_intermediate_from_another_root_is_refused_at_load(tmp_path: Path) -> None:
    root = make_ca("root")
    intermediate = make_ca("intermediate", issuer=root)
    stranger = make_ca("stranger")
    write_cacerts(
        tmp_path,
        ca_cert=intermediate[0],
        ca_key=intermediate[1],
        chain=[intermediate[0]],
        roots=[stranger[0]],
    )

    with pytest.raises(InvalidCABundle, match="does not lead to a root"):
        CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)


def test_leaf_issuer_field_names_the_intermediate(tmp_path: Path, reviews: Identity) -> None:
    root = make_ca("root")
    intermediate = make_ca("intermediate", issuer=root)
    write_cacerts(
        tmp_path,
        ca_cert=intermediate[0],
        ca_key=intermediate[1],
        chain=[intermediate[0]],
        roots=[root[0]],
    )

    cert = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW).issue(
        reviews, now=NOW
    )

    leaf = load_chain(cert.cert_chain_pem)[0]
    assert leaf.issuer == intermediate[0].subject
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
