"""DestinationRule traffic policies compile to the exact Envoy cluster and endpoint fields,
with istiod's defaults and its precedence (subset-port > subset > top-port > top)."""

from __future__ import annotations

from typing import Any

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, ENDPOINT
from tests.support import meshes
from tests.unit.compile.helpers import REVIEWS, as_dict, compiled, local_proxy, snapshot_of

FQDN = "reviews.default.svc.cluster.local"
MAX = 4294967295


def rule(policy: str, subsets: str = "") -> str:
    def indent(text: str, by: int) -> str:
        return "\n".join(" " * by + line for line in text.strip("\n").splitlines())

    out = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
{indent(policy, 4)}
"""
    if subsets:
        out += f"  subsets:\n{indent(subsets, 2)}\n"
    return out


def clusters_of(*docs: str) -> dict[str, dict[str, Any]]:
    return compiled(snapshot_of(*docs), local_proxy())["cds"]


def test_without_a_rule_clusters_get_istio_defaults() -> None:
    cluster = clusters_of(REVIEWS)[f"outbound|9080||{FQDN}"]
    assert cluster["connectTimeout"] == "10s"
    assert cluster["lbPolicy"] == "LEAST_REQUEST"
    assert cluster["circuitBreakers"] == {
        "thresholds": [
            {
                "maxConnections": MAX,
                "maxPendingRequests": MAX,
                "maxRequests": MAX,
                "maxRetries": MAX,
                "trackRemaining": True,
            }
        ]
    }
    assert "outlierDetection" not in cluster and "commonLbConfig" not in cluster


def test_connection_pool_sets_thresholds_timeouts_keepalive_and_http_options() -> None:
    cluster = clusters_of(
        REVIEWS,
        rule("""
connectionPool:
  tcp:
    maxConnections: 7
    connectTimeout: 250ms
    tcpKeepalive: {probes: 3, time: 600s, interval: 75s}
  http:
    http1MaxPendingRequests: 5
    http2MaxRequests: 9
    maxRetries: 2
    maxRequestsPerConnection: 1
    idleTimeout: 30s
"""),
    )[f"outbound|9080||{FQDN}"]
    assert cluster["connectTimeout"] == "0.250s"
    assert cluster["circuitBreakers"]["thresholds"] == [
        {
            "maxConnections": 7,
            "maxPendingRequests": 5,
            "maxRequests": 9,
            "maxRetries": 2,
            "trackRemaining": True,
        }
    ]
    assert cluster["upstreamConnectionOptions"] == {
        "tcpKeepalive": {"keepaliveProbes": 3, "keepaliveTime": 600, "keepaliveInterval": 75}
    }
    options = cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["commonHttpProtocolOptions"] == {
        "idleTimeout": "30s",
        "maxRequestsPerConnection": 1,
    }
    assert options["explicitHttpConfig"] == {"httpProtocolOptions": {}}


def test_h2_upgrade_policy_upgrade_speaks_http2_to_the_upstream() -> None:
    cluster = clusters_of(REVIEWS, rule("connectionPool: {http: {h2UpgradePolicy: UPGRADE}}"))[
        f"outbound|9080||{FQDN}"
    ]
    options = cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {}}


def test_outlier_detection_enforces_fully_disables_success_rate_and_the_panic_threshold() -> None:
    cluster = clusters_of(
        REVIEWS,
        rule("""
outlierDetection:
  consecutive5xxErrors: 3
  consecutiveGatewayErrors: 2
  interval: 5s
  baseEjectionTime: 30s
  maxEjectionPercent: 50
"""),
    )[f"outbound|9080||{FQDN}"]
    assert cluster["outlierDetection"] == {
        "consecutive5xx": 3,
        "enforcingConsecutive5xx": 100,
        "consecutiveGatewayFailure": 2,
        "enforcingConsecutiveGatewayFailure": 100,
        "interval": "5s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 50,
        "enforcingSuccessRate": 0,
    }
    assert cluster["commonLbConfig"] == {"healthyPanicThreshold": {}}  # 0%


def test_min_health_percent_is_the_healthy_panic_threshold() -> None:
    cluster = clusters_of(
        REVIEWS, rule("outlierDetection: {consecutive5xxErrors: 0, minHealthPercent: 40}")
    )[f"outbound|9080||{FQDN}"]
    assert cluster["outlierDetection"]["enforcingConsecutive5xx"] == 0
    assert cluster["commonLbConfig"]["healthyPanicThreshold"] == {"value": 40.0}


def test_simple_load_balancers_map_to_envoy_policies() -> None:
    for simple, expected in (
        ("ROUND_ROBIN", "ROUND_ROBIN"),
        ("RANDOM", "RANDOM"),
        ("LEAST_CONN", "LEAST_REQUEST"),
        ("LEAST_REQUEST", "LEAST_REQUEST"),
    ):
        cluster = clusters_of(REVIEWS, rule(f"loadBalancer: {{simple: {simple}}}"))[
            f"outbound|9080||{FQDN}"
        ]
        assert cluster.get("lbPolicy", "ROUND_ROBIN") == expected, simple


def test_passthrough_is_an_original_destination_cluster_without_endpoints() -> None:
    out = compiled(snapshot_of(REVIEWS, rule("loadBalancer: {simple: PASSTHROUGH}")), local_proxy())
    cluster = out["cds"][f"outbound|9080||{FQDN}"]
    assert cluster["type"] == "ORIGINAL_DST"
    assert cluster["lbPolicy"] == "CLUSTER_PROVIDED"
    assert "edsClusterConfig" not in cluster
    assert f"outbound|9080||{FQDN}" not in out["eds"]


def test_consistent_hash_is_a_ring_hash_of_1024_unless_ring_or_maglev_sizes_are_given() -> None:
    cases = (
        (
            "{httpHeaderName: x-user}",
            "RING_HASH",
            {"ringHashLbConfig": {"minimumRingSize": "1024"}},
        ),
        (
            "{httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}",
            "RING_HASH",
            {"ringHashLbConfig": {"minimumRingSize": "2048"}},
        ),
        (
            "{httpHeaderName: x-user, maglev: {tableSize: 65537}}",
            "MAGLEV",
            {"maglevLbConfig": {"tableSize": "65537"}},
        ),
    )
    for hash_lb, policy, config in cases:
        cluster = clusters_of(REVIEWS, rule(f"loadBalancer: {{consistentHash: {hash_lb}}}"))[
            f"outbound|9080||{FQDN}"
        ]
        assert cluster["lbPolicy"] == policy
        for key, value in config.items():
            assert cluster[key] == value


TWO_PORTS = meshes.join(
    meshes.service(
        "reviews", ports=[{"name": "http", "port": 9080}, {"name": "http-admin", "port": 9090}]
    ),
    meshes.pod("reviews-v1", "10.0.0.1", app="reviews", version="v1"),
)
LAYERED = rule(
    """
loadBalancer: {simple: ROUND_ROBIN}
connectionPool: {tcp: {maxConnections: 10}}
portLevelSettings:
- port: {number: 9090}
  loadBalancer: {simple: RANDOM}
""",
    """
- name: v1
  labels: {version: v1}
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {tcp: {maxConnections: 7}}
""",
)


def test_policy_precedence_is_subset_port_then_subset_then_top_port_then_top_whole() -> None:
    out = clusters_of(TWO_PORTS, LAYERED)

    def shape(name: str) -> tuple[str, int, bool]:
        c = out[name]
        return (
            c.get("lbPolicy", "ROUND_ROBIN"),
            c["circuitBreakers"]["thresholds"][0]["maxConnections"],
            "outlierDetection" in c,
        )

    # top level
    assert shape(f"outbound|9080||{FQDN}") == ("ROUND_ROBIN", 10, False)
    # top-level port entry replaces the whole top-level policy (no inherited pool)
    assert shape(f"outbound|9090||{FQDN}") == ("RANDOM", MAX, False)
    # subset overrides component by component
    assert shape(f"outbound|9080|v1|{FQDN}") == ("ROUND_ROBIN", 10, True)
    # subset port entry replaces everything
    assert shape(f"outbound|9090|v1|{FQDN}") == ("LEAST_REQUEST", 7, False)


LOCALITY_PODS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: default
  labels: {app: reviews, topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: default
  labels: {app: reviews, topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z2}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata:
  name: c
  namespace: default
  labels: {app: reviews, topology.kubernetes.io/region: r2, topology.kubernetes.io/zone: z1}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata:
  name: d
  namespace: default
  labels: {app: reviews, topology.kubernetes.io/region: r3, topology.kubernetes.io/zone: z1}
status: {podIP: 10.0.0.4}
"""


def endpoints_for(proxy: Proxy, *docs: str) -> dict[str, Any]:
    compiler = SnapshotCompiler(snapshot_of(*docs))
    resources = compiler.compile(proxy)
    return as_dict(resources.of(ENDPOINT)[f"outbound|9080||{FQDN}"].message)


def located(locality: str) -> Proxy:
    base = local_proxy()
    return Proxy(
        node_id=base.node_id,
        namespace="default",
        local_outbound_port=15001,
        locality=locality,
    )


def test_outlier_detection_turns_on_failover_priorities_by_closeness_to_the_client() -> None:
    cla = endpoints_for(
        located("r1/z1"),
        LOCALITY_PODS,
        rule("outlierDetection: {consecutive5xxErrors: 1}"),
    )
    priorities = {
        (g["locality"]["region"], g["locality"]["zone"]): g.get("priority", 0)
        for g in cla["endpoints"]
    }
    assert priorities == {("r1", "z1"): 0, ("r1", "z2"): 1, ("r2", "z1"): 2, ("r3", "z1"): 2}


def test_failover_names_the_region_to_fail_over_to_and_pushes_others_down() -> None:
    cla = endpoints_for(
        located("r1/z1"),
        LOCALITY_PODS,
        rule("""
outlierDetection: {consecutive5xxErrors: 1}
loadBalancer:
  localityLbSetting:
    failover: [{from: r1, to: r3}]
"""),
    )
    priorities = {
        g["locality"]["region"] + "/" + g["locality"]["zone"]: g.get("priority", 0)
        for g in cla["endpoints"]
    }
    assert priorities == {"r1/z1": 0, "r1/z2": 1, "r3/z1": 2, "r2/z1": 3}


def test_without_outlier_detection_there_is_no_failover_and_the_assignment_is_shared() -> None:
    compiler = SnapshotCompiler(snapshot_of(LOCALITY_PODS, rule("loadBalancer: {simple: RANDOM}")))
    a = compiler.compile(located("r1/z1")).of(ENDPOINT)[f"outbound|9080||{FQDN}"]
    b = compiler.compile(located("r2/z1")).of(ENDPOINT)[f"outbound|9080||{FQDN}"]
    assert a is b
    assert all("priority" not in g for g in as_dict(a.message)["endpoints"])


def test_distribute_weights_localities_for_clients_in_the_from_locality() -> None:
    policy = rule("""
loadBalancer:
  localityLbSetting:
    distribute:
    - from: r1/z1/*
      to: {"r1/z1/*": 80, "r2/*": 20}
""")
    compiler = SnapshotCompiler(snapshot_of(LOCALITY_PODS, policy))
    cluster = as_dict(
        compiler.compile(located("r1/z1")).of(CLUSTER)[f"outbound|9080||{FQDN}"].message
    )
    assert cluster["commonLbConfig"] == {"localityWeightedLbConfig": {}}
    cla = as_dict(compiler.compile(located("r1/z1")).of(ENDPOINT)[f"outbound|9080||{FQDN}"].message)
    by_locality = {
        g["locality"]["region"] + "/" + g["locality"]["zone"]: (
            g["loadBalancingWeight"],
            len(g.get("lbEndpoints", [])),
        )
        for g in cla["endpoints"]
    }
    assert by_locality == {"r1/z1": (80, 1), "r2/z1": (20, 1), "r1/z2": (1, 0), "r3/z1": (1, 0)}
    # A client elsewhere is not covered by the rule: plain counts.
    other = as_dict(
        compiler.compile(located("r3/z1")).of(ENDPOINT)[f"outbound|9080||{FQDN}"].message
    )
    assert all(g["loadBalancingWeight"] == 1 for g in other["endpoints"])


def test_failover_priority_labels_split_endpoints_by_how_much_they_share_with_the_client() -> None:
    pods = LOCALITY_PODS.replace("app: reviews, topology", "app: reviews, tier: gold, topology", 1)
    policy = rule("""
outlierDetection: {consecutive5xxErrors: 1}
loadBalancer:
  localityLbSetting:
    failoverPriority: [tier]
""")
    proxy = Proxy(
        node_id="sidecar~127.0.0.1~client.default~default.svc.cluster.local",
        namespace="default",
        labels={"tier": "gold"},
        local_outbound_port=15001,
        locality="r9/z9",
    )
    cla = endpoints_for(proxy, pods, policy)
    by_priority: dict[int, list[str]] = {}
    for group in cla["endpoints"]:
        for ep in group.get("lbEndpoints", []):
            address = ep["endpoint"]["address"]["socketAddress"]["address"]
            by_priority.setdefault(group.get("priority", 0), []).append(address)
    assert by_priority == {0: ["10.0.0.1"], 1: ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}


def test_identical_rules_give_every_proxy_the_same_cluster_object() -> None:
    compiler = SnapshotCompiler(snapshot_of(REVIEWS, rule("loadBalancer: {simple: ROUND_ROBIN}")))
    a = compiler.compile(local_proxy()).of(CLUSTER)
    b = compiler.compile(local_proxy(labels={"app": "x"})).of(CLUSTER)
    assert a[f"outbound|9080||{FQDN}"] is b[f"outbound|9080||{FQDN}"]
