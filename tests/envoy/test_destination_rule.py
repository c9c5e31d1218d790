"""Through a real Envoy: DestinationRule load balancing (round robin, consistent hash by header),
connection-pool overflow, outlier ejection, and subset policy overriding the top level."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from controlplane.testing.backends import always
from controlplane.testing.traffic import count_backends, send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, located_sidecar, traffic_mesh, wait_until
from tests.support import meshes

REGION, ZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone"
RULES = meshes.join(
    meshes.resource(
        "DestinationRule",
        "rr",
        """
  host: rr
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
""",
    ),
    meshes.resource(
        "DestinationRule",
        "sticky",
        """
  host: sticky
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
""",
    ),
    meshes.resource(
        "DestinationRule",
        "pool",
        """
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
""",
    ),
    meshes.resource(
        "DestinationRule",
        "outlier",
        """
  host: outlier
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 100
""",
    ),
    meshes.resource(
        "DestinationRule",
        "layered",
        """
  host: layered
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
""",
    ),
    meshes.resource(
        "DestinationRule",
        "nearby",
        """
  host: nearby
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
""",
    ),
    meshes.resource(
        "VirtualService",
        "layered",
        """
  hosts: [layered]
  http:
  - match: [{headers: {x-subset: {exact: v2}}}]
    route: [{destination: {host: layered, subset: v2}}]
  - route: [{destination: {host: layered, subset: v1}}]
""",
    ),
)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {
        "rr": [Pod(f"rr-{i}", f"127.0.4.{50 + i}") for i in range(3)],
        "sticky": [Pod(f"sticky-{i}", f"127.0.4.{54 + i}") for i in range(3)],
        "pool": [Pod("pool-0", "127.0.4.57", behaviour=always(delay=1.0))],
        "outlier": [
            Pod("outlier-bad", "127.0.4.58", behaviour=always(status=500)),
            Pod("outlier-good-0", "127.0.4.59"),
            Pod("outlier-good-1", "127.0.4.60"),
        ],
        "layered": [
            Pod("layered-v1-a", "127.0.4.61", {"version": "v1"}),
            Pod("layered-v1-b", "127.0.4.62", {"version": "v1"}),
            Pod("layered-v2-a", "127.0.4.63", {"version": "v2"}),
            Pod("layered-v2-b", "127.0.4.64", {"version": "v2"}),
        ],
        "nearby": [
            Pod("nearby-r1", "127.0.4.65", {REGION: "r1", ZONE: "z1"}),
            Pod("nearby-r2", "127.0.4.66", {REGION: "r2", ZONE: "z1"}),
        ],
    }
    with traffic_mesh(tmp_path_factory.mktemp("rules"), services, {"dr.yaml": RULES}) as mesh:
        yield mesh


def test_round_robin_spreads_requests_evenly_over_the_pods(rules: TrafficMesh) -> None:
    counts = count_backends(rules.port, "rr:8080", 300)
    assert set(counts) == {"rr-0", "rr-1", "rr-2"}, counts
    assert all(95 <= n <= 105 for n in counts.values()), counts


def test_consistent_hash_by_header_keeps_each_user_on_one_pod(rules: TrafficMesh) -> None:
    homes = set()
    for user in ("jason", "mary", "ana", "li", "omar"):
        counts = count_backends(rules.port, "sticky:8080", 100, headers={"x-user": user})
        assert len(counts) == 1 and sum(counts.values()) == 100, (user, counts)
        homes.update(counts)
    # Different users land on different pods (the hash is not constant).
    spread = {
        next(iter(count_backends(rules.port, "sticky:8080", 1, headers={"x-user": f"u{i}"})))
        for i in range(30)
    }
    assert len(spread | homes) >= 2, spread


def test_connection_pool_overflow_is_a_503_with_envoy_overflow_flag(rules: TrafficMesh) -> None:
    results: list[tuple[int, dict[str, str]]] = []
    lock = threading.Lock()

    def one() -> None:
        status, headers, _ = send(rules.port, "pool:8080", "/", timeout=10)
        with lock:
            results.append((status, headers))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    statuses = Counter(status for status, _ in results)
    # One request on the one connection, one pending; the other six overflow at once.
    assert statuses[200] >= 1 and statuses[503] >= 4, statuses
    overflowed = [h for s, h in results if s == 503]
    assert all(h.get("x-envoy-overloaded") == "true" for h in overflowed), overflowed
    name = "cluster.outbound|8080||pool.default.svc.cluster.local.upstream_rq_pending_overflow"
    # upstream_rq_pending_overflow is the counter behind the UO response flag.
    assert rules.stat(name) == statuses[503]


def test_outlier_detection_ejects_a_failing_pod_and_traffic_moves_to_the_healthy_ones(
    rules: TrafficMesh,
) -> None:
    warmup = count_backends(rules.port, "outlier:8080", 60)
    assert warmup["500"] >= 2, warmup  # the bad pod was tried and failed twice in a row
    ejected = "cluster.outbound|8080||outlier.default.svc.cluster.local.outlier_detection.ejections_enforced_total"
    assert wait_until(lambda: rules.stat(ejected) >= 1), rules.stat(ejected)
    after = count_backends(rules.port, "outlier:8080", 100)
    assert set(after) == {"outlier-good-0", "outlier-good-1"}, after


def test_subset_load_balancer_overrides_the_top_level_consistent_hash(rules: TrafficMesh) -> None:
    user = {"x-user": "jason"}
    v1 = count_backends(rules.port, "layered:8080", 60, headers=user)
    assert len(v1) == 1 and set(v1) <= {"layered-v1-a", "layered-v1-b"}, v1
    v2 = count_backends(rules.port, "layered:8080", 60, headers={**user, "x-subset": "v2"})
    assert v2 == {"layered-v2-a": 30, "layered-v2-b": 30}, v2


def test_the_sticky_rule_applies_without_a_virtual_service(rules: TrafficMesh) -> None:
    # "sticky" has no VirtualService: its default route carries the rule's hash policy.
    config = rules.sidecar.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    text = json.dumps(config)
    assert '"header_name": "x-user"' in text


def test_outlier_detection_keeps_traffic_in_the_client_locality_and_fails_over_when_it_fails(
    rules: TrafficMesh,
) -> None:
    client = located_sidecar(
        rules.mesh, "sidecar~127.0.0.2~located.default~default.svc.cluster.local", "r1", "z1"
    )
    # Same region and zone: priority 0; the other region is only a fallback.
    assert count_backends(client.outbound_port, "nearby:8080", 40) == {"nearby-r1": 40}
    # A client without a locality is equally far from both: no preference.
    spread = count_backends(rules.port, "nearby:8080", 40)
    assert set(spread) == {"nearby-r1", "nearby-r2"}, spread
    near = rules.backends["nearby-r1"]
    near.behaviour = always(status=500)
    try:
        failing = count_backends(client.outbound_port, "nearby:8080", 5)
        assert failing["500"] >= 1, failing  # the local pod failed and was ejected
        after = count_backends(client.outbound_port, "nearby:8080", 40)
    finally:
        near.behaviour = None
    assert after == {"nearby-r2": 40}, after
