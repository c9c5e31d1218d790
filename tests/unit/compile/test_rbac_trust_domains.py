"""Trust-domain aliases as istiod expands them (``pilot/pkg/security/trustdomain``): the
situations its bundle tests cover, restated with our own names."""

from __future__ import annotations

import pytest

from controlplane.compile.rbac_trust_domains import expand_principals, expand_trust_domains


@pytest.mark.parametrize(
    ("domains", "principals", "expected"),
    [
        # no aliases: unchanged
        (("cluster.local",), ["cluster.local/ns/shop/sa/cart"], ["cluster.local/ns/shop/sa/cart"]),
        # no trust domain to enforce: as written
        (("cluster.local",), ["*"], ["*"]),
        (("cluster.local",), ["*/ns/shop/sa/cart"], ["*/ns/shop/sa/cart"]),
        (("new", "cluster.local"), ["*sa/cart", "ns/shop"], ["*sa/cart", "ns/shop"]),
        # an alias written: every trust domain of the mesh
        (("new", "old"), ["old/ns/shop/sa/cart"], ["new/ns/shop/sa/cart", "old/ns/shop/sa/cart"]),
        # cluster.local always means the local trust domain
        (("new",), ["cluster.local/ns/shop/sa/cart"], ["new/ns/shop/sa/cart"]),
        (
            ("new", "old", "cluster.local"),
            ["cluster.local/ns/a/sa/b", "old/ns/c/sa/d"],
            [
                "new/ns/a/sa/b",
                "old/ns/a/sa/b",
                "cluster.local/ns/a/sa/b",
                "new/ns/c/sa/d",
                "old/ns/c/sa/d",
                "cluster.local/ns/c/sa/d",
            ],
        ),
        # a suffix trust domain matching an alias stays as written for it
        (
            ("new", "east-old", "cluster.local"),
            ["*-old/ns/shop/sa/cart"],
            ["new/ns/shop/sa/cart", "*-old/ns/shop/sa/cart", "cluster.local/ns/shop/sa/cart"],
        ),
        (("new", "east-old"), ["*-old/ns/a/sa/b"], ["new/ns/a/sa/b", "*-old/ns/a/sa/b"]),
        # another mesh's identity: as written
        (("new", "old"), ["partner/ns/a/sa/b"], ["partner/ns/a/sa/b"]),
        (
            ("new", "old", "third"),
            ["partner/ns/a/sa/b", "old/ns/c/sa/d"],
            ["partner/ns/a/sa/b", "new/ns/c/sa/d", "old/ns/c/sa/d", "third/ns/c/sa/d"],
        ),
        # an empty trust domain is not one of the mesh's
        (("new", "old"), ["/ns/a/sa/b"], ["/ns/a/sa/b"]),
    ],
)
def test_principals_are_expanded_over_the_mesh_trust_domains(
    domains: tuple[str, ...], principals: list[str], expected: list[str]
) -> None:
    assert expand_principals(principals, domains) == expected


def test_a_trust_domains_value_naming_one_of_the_mesh_stands_for_all() -> None:
    domains = ("new", "old")
    assert expand_trust_domains(["old", "partner"], domains) == ["new", "old", "partner"]
    assert expand_trust_domains(["partner*"], domains) == ["partner*"]
