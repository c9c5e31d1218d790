"""AuthorizationPolicy enforced by real Envoy sidecars: the mesh's own payment example
(ALLOW POST /api/v1/charge and /api/v1/refund from the order and refund service accounts),
a DENY overriding it, and the 403s coming from Envoy's RBAC filter, not from the app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.envoy.zero_trust import (
    PAYMENT_POLICY,
    WORKLOADS,
    ZeroTrustMesh,
    peer_authentication,
    plaintext_exchange,
    start_zero_trust_mesh,
)
from tests.support import meshes

DENY_ORDER_CHARGES = meshes.resource(
    "AuthorizationPolicy",
    "no-order-charges",
    """
  selector: {matchLabels: {app: payment}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/order-service]}}]
    to: [{operation: {paths: [/api/v1/charge]}}]
""",
)


@pytest.fixture(scope="module")
def zt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZeroTrustMesh]:
    mesh = start_zero_trust_mesh(tmp_path_factory.mktemp("authz"))
    try:
        mesh.write("peer-authentication.yaml", peer_authentication("STRICT"))
        mesh.write("payment-policy.yaml", PAYMENT_POLICY)
        yield mesh
    finally:
        mesh.mesh.stop()


def rbac_denied(zt: ZeroTrustMesh) -> int:
    port = zt.app_port
    return zt.sidecars["payment"].envoy.stat(
        f"http.inbound_{WORKLOADS['payment'][0]}_{port}.rbac.denied"
    )


def test_order_service_may_charge(zt: ZeroTrustMesh) -> None:
    status, body = zt.call("order-service", "POST", "/api/v1/charge")
    assert status == 200
    assert b'"name": "payment"' in body


def test_refund_service_may_refund(zt: ZeroTrustMesh) -> None:
    assert zt.call("refund-service", "POST", "/api/v1/refund")[0] == 200


def test_web_is_denied_by_envoy_rbac(zt: ZeroTrustMesh) -> None:
    served, denied = zt.apps["payment"].count(), rbac_denied(zt)
    status, body = zt.call("web", "POST", "/api/v1/charge")
    assert status == 403
    assert body == b"RBAC: access denied"
    assert rbac_denied(zt) == denied + 1
    assert zt.apps["payment"].count() == served  # the app never saw it


def test_order_service_may_not_get_what_it_may_post(zt: ZeroTrustMesh) -> None:
    status, body = zt.call("order-service", "GET", "/api/v1/charge")
    assert status == 403
    assert body == b"RBAC: access denied"


def test_a_path_outside_the_policy_is_denied(zt: ZeroTrustMesh) -> None:
    assert zt.call("order-service", "POST", "/api/v1/accounts")[0] == 403


def test_a_deny_policy_overrides_the_allow(zt: ZeroTrustMesh) -> None:
    zt.write("deny.yaml", DENY_ORDER_CHARGES)
    try:
        assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 403
        assert zt.call("order-service", "POST", "/api/v1/refund")[0] == 200
        assert zt.call("refund-service", "POST", "/api/v1/charge")[0] == 200
    finally:
        zt.remove("deny.yaml")
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200


def test_plaintext_has_no_principal_so_permissive_does_not_open_the_policy(
    zt: ZeroTrustMesh,
) -> None:
    zt.write("peer-authentication.yaml", peer_authentication("PERMISSIVE"))
    try:
        pod = WORKLOADS["payment"][0]
        request = b"POST /api/v1/charge HTTP/1.1\r\nHost: payment\r\nContent-Length: 0\r\n\r\n"
        answer = plaintext_exchange(pod, zt.app_port, request)
        assert answer.startswith(b"HTTP/1.1 403")
        assert answer.endswith(b"RBAC: access denied")
    finally:
        zt.write("peer-authentication.yaml", peer_authentication("STRICT"))


def test_an_allow_policy_without_rules_denies_everything(zt: ZeroTrustMesh) -> None:
    zt.write(
        "payment-policy.yaml",
        meshes.resource(
            "AuthorizationPolicy",
            "payment",
            """
          selector: {matchLabels: {app: payment}}
        """,
        ),
    )
    try:
        assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 403
        # Other workloads are not selected: no ALLOW policy applies to them.
        assert zt.call("order-service", "GET", "/", server="web")[0] == 200
    finally:
        zt.write("payment-policy.yaml", PAYMENT_POLICY)
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200


def test_a_broken_policy_denies_rather_than_allows_and_says_so(zt: ZeroTrustMesh) -> None:
    broken = meshes.resource(
        "AuthorizationPolicy",
        "typo",
        """
      action: DENY
      rules: [{when: [{key: source.ipaddress, notValues: [127.0.7.11]}]}]
    """,
    )
    zt.write("typo.yaml", broken)
    try:
        assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 403
        assert zt.call("order-service", "GET", "/", server="web")[0] == 403
        status = {s["resource"]: s for s in zt.mesh.debug.get("/debug/status")}
        typo = status["AuthorizationPolicy default/typo"]
        assert not typo["accepted"]
        assert any(
            "spec.rules[0].when[0].key: unknown key 'source.ipaddress'" in i for i in typo["issues"]
        )
        assert any(
            "CP0203" in i
            and "DENY policy refused: until it is fixed all workloads of namespace default "
            "deny all requests"
            in i
            for i in typo["issues"]
        )
    finally:
        zt.remove("typo.yaml")
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200


def test_on_a_tcp_port_network_rbac_applies_the_rules_it_can_check(zt: ZeroTrustMesh) -> None:
    # The HTTP rule (methods, paths) cannot be checked on TCP: it allows nothing there.
    assert zt.ledger("order-service") == ""
    zt.write(
        "ledger-policy.yaml",
        meshes.resource(
            "AuthorizationPolicy",
            "ledger",
            f"""
          selector: {{matchLabels: {{app: payment}}}}
          rules:
          - from: [{{source: {{principals: [cluster.local/ns/default/sa/order-service]}}}}]
            to: [{{operation: {{ports: ["{zt.tcp_port}"]}}}}]
        """,
        ),
    )
    try:
        assert zt.ledger("order-service") == "ledger hello"
        denied = zt.sidecars["payment"].envoy.stat("tcp.rbac.denied")
        assert zt.ledger("web") == ""
        assert zt.sidecars["payment"].envoy.stat("tcp.rbac.denied") == denied + 1
        # HTTP on the same workload is unaffected by the TCP rule.
        assert zt.call("web", "POST", "/api/v1/charge")[0] == 403
        assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200
    finally:
        zt.remove("ledger-policy.yaml")
