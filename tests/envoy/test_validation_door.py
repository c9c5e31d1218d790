"""What validation refuses at the door, seen through real Envoys (issue 11).

* A request header name with a space: Envoy takes the config and then fails every request on
  the route (503). It is refused with its field path in the log, and the last good version
  of the VirtualService keeps serving.
* A DENY AuthorizationPolicy with a misspelt ``rulez:``: it used to be kept with a warning,
  a DENY with no rules, which lets everything through (fails open). It is refused as an
  unknown field, and the refused policy fails closed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from controlplane.testing.traffic import send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, traffic_mesh, wait_until
from tests.envoy.zero_trust import (
    PAYMENT_POLICY,
    ZeroTrustMesh,
    peer_authentication,
    start_zero_trust_mesh,
)

HOST = "reviews:8080"


def reviews_vs(header_name: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: reviews, namespace: default}}
        spec:
          hosts: [reviews]
          http:
          - route: [{{destination: {{host: reviews}}}}]
            headers: {{request: {{set: {{"{header_name}": "on"}}}}}}
        """
    )


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {"reviews": [Pod("reviews-v1", "127.0.4.61", {"version": "v1"})]}
    config = {"vs-reviews.yaml": reviews_vs("x-canary")}
    with traffic_mesh(tmp_path_factory.mktemp("door"), services, config) as mesh:
        yield mesh


def test_a_header_name_with_a_space_is_refused_and_the_last_good_route_keeps_serving(
    routing: TrafficMesh,
) -> None:
    assert wait_until(lambda: send(routing.port, HOST, "/")[0] == 200, timeout=10)
    routing.mesh.write("vs-reviews.yaml", reviews_vs("x canary"))
    log = routing.mesh.control_plane
    assert wait_until(lambda: "spec.http[0].headers.request.set.x canary" in log.log_text(), 10)
    line = next(ln for ln in log.log_text().splitlines() if "headers.request.set.x canary" in ln)
    assert "VirtualService default/reviews" in line
    assert "'x canary' is not a valid HTTP header name" in line
    # Nothing reached Envoy that breaks the route: 100 requests, 100 served.
    statuses = [send(routing.port, HOST, f"/after/{i}")[0] for i in range(100)]
    assert statuses.count(200) == 100, statuses


DENY_ADMIN_MISSPELT = textwrap.dedent(
    """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: deny-charges, namespace: default}
    spec:
      selector: {matchLabels: {app: payment}}
      action: DENY
      rulez:
      - to: [{operation: {paths: [/api/v1/charge]}}]
    """
)


@pytest.fixture(scope="module")
def zt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZeroTrustMesh]:
    mesh = start_zero_trust_mesh(tmp_path_factory.mktemp("door-authz"))
    try:
        mesh.write("peer-authentication.yaml", peer_authentication("STRICT"))
        mesh.write("payment-policy.yaml", PAYMENT_POLICY)
        yield mesh
    finally:
        mesh.mesh.stop()


def test_a_deny_policy_with_a_misspelt_rules_field_is_refused_and_fails_closed(
    zt: ZeroTrustMesh,
) -> None:
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200
    zt.mesh.write("deny-charges.yaml", DENY_ADMIN_MISSPELT)
    log = zt.mesh.control_plane
    assert wait_until(lambda: "spec.rulez" in log.log_text(), 10)
    line = next(ln for ln in log.log_text().splitlines() if "spec.rulez" in ln)
    assert "CP0104" in line and "AuthorizationPolicy default/deny-charges" in line
    # Fails closed: the charge the DENY was meant to stop is not let through.
    assert wait_until(
        lambda: zt.call("order-service", "POST", "/api/v1/charge")[0] == 403, timeout=10
    )
    zt.mesh.remove("deny-charges.yaml")
    assert wait_until(
        lambda: zt.call("order-service", "POST", "/api/v1/charge")[0] == 200, timeout=10
    )
