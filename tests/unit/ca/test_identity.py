from __future__ import annotations

import pytest

from controlplane.ca import Identity, InvalidIdentity


def test_spiffe_id_joins_trust_domain_namespace_and_service_account() -> None:
    identity = Identity("cluster.local", "bookinfo", "reviews-v2")

    assert identity.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2"
    assert str(identity) == identity.spiffe_id


def test_parse_reads_back_what_spiffe_id_wrote() -> None:
    identity = Identity("example.org", "istio-system", "istio.ingressgateway")

    assert Identity.parse(identity.spiffe_id) == identity


def test_identities_compare_and_hash_by_value() -> None:
    assert Identity("td", "ns", "sa") == Identity("td", "ns", "sa")
    assert len({Identity("td", "ns", "sa"), Identity("td", "ns", "sa")}) == 1


@pytest.mark.parametrize(
    "uri",
    [
        "https://cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/default",
        "spiffe://cluster.local/ns/default/sa/",
        "spiffe://cluster.local/ns/default/sa/reviews/",
        "spiffe://cluster.local/ns/default/sa/reviews/extra",
        "spiffe://cluster.local/sa/reviews/ns/default",
        "spiffe://cluster.local/ns/default/sa/reviews?x=1",
        "spiffe://cluster.local/ns/default/sa/reviews#frag",
        "spiffe://cluster.local:8080/ns/default/sa/reviews",
        "spiffe://user@cluster.local/ns/default/sa/reviews",
        "spiffe://Cluster.Local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/Default/sa/reviews",
        "spiffe://cluster.local/ns/-default/sa/reviews",
        "spiffe:///ns/default/sa/reviews",
        " spiffe://cluster.local/ns/default/sa/reviews",
        "spiffe://cluster.local/ns/default/sa/reviews\n",
    ],
)
def test_parse_rejects_anything_but_an_exact_workload_spiffe_id(uri: str) -> None:
    with pytest.raises(InvalidIdentity):
        Identity.parse(uri)


def test_namespace_longer_than_a_dns_label_is_rejected() -> None:
    with pytest.raises(InvalidIdentity, match="namespace"):
        Identity("cluster.local", "a" * 64, "reviews")


def test_error_names_the_part_that_is_wrong() -> None:
    with pytest.raises(InvalidIdentity, match="service account 'Reviews'"):
        Identity("cluster.local", "default", "Reviews")
    with pytest.raises(InvalidIdentity, match="trust domain 'cluster/local'"):
        Identity("cluster/local", "default", "reviews")


def test_invalid_identity_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        Identity.parse("not a uri")
