"""Istio's precedence and visibility rules: which VirtualService and DestinationRule a proxy
gets, and the in-context findings about them."""

from __future__ import annotations

import textwrap

import yaml

from controlplane.api import load
from controlplane.api.issues import Codes
from controlplane.compile.proxy import Proxy
from controlplane.store import Store, Submission
from controlplane.store.context import check_destination_rule
from tests.unit.compile.helpers import REVIEWS, compiled, local_proxy, snapshot_of

FQDN = "reviews.default.svc.cluster.local"


def vs(name: str, created: str, subset: str, hosts: str = "[reviews]", extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default, creationTimestamp: "{created}"}}
spec:
  hosts: {hosts}
{extra}  http:
  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}}}]
"""


def first_cluster(snapshot_docs: list[str], proxy: Proxy | None = None) -> str:
    out = compiled(snapshot_of(*snapshot_docs), proxy or local_proxy())
    config = next(iter(out["rds"].values()))
    vhost = next(v for v in config["virtualHosts"] if v["name"] == f"{FQDN}:9080")
    return str(vhost["routes"][0]["route"]["cluster"])


def store_of(*docs: str) -> Store:
    store = Store()
    subs = []
    for text in docs:
        for doc in yaml.safe_load_all(textwrap.dedent(text)):
            if doc:
                resource, issues = load(doc)
                subs.append(Submission(resource, tuple(issues)))
    store.apply(upserts=subs)
    return store


def test_oldest_virtual_service_wins_a_host_whatever_the_order_they_arrive_in() -> None:
    old = vs("b-old", "2026-01-01T00:00:00Z", "v1")
    new = vs("a-new", "2026-06-01T00:00:00Z", "v2")
    assert first_cluster([REVIEWS, new, old]) == f"outbound|9080|v1|{FQDN}"
    assert first_cluster([REVIEWS, old, new]) == f"outbound|9080|v1|{FQDN}"


def test_the_newer_virtual_service_is_reported_as_a_conflict_but_still_serves_its_other_hosts() -> (
    None
):
    ratings = REVIEWS.replace("name: reviews, namespace", "name: ratings, namespace").split("---")[
        0
    ]
    old = vs("old", "2026-01-01T00:00:00Z", "v1")
    new = vs("new", "2026-06-01T00:00:00Z", "v2", hosts="[reviews, ratings]")
    store = store_of(REVIEWS, "---\n" + ratings, old, new)
    status = {str(k): v for k, v in store.snapshot.status.items()}
    newer = status["VirtualService default/new"]
    [conflict] = [i for i in newer.issues if i.code is Codes.CONFLICTING_VIRTUAL_SERVICES]
    assert conflict.path == "spec.hosts[0]"
    assert "older VirtualService default/old" in conflict.reason
    assert newer.reconciled  # not held back: it is the VirtualService of ratings
    assert not [i for i in status["VirtualService default/old"].issues if i.code.id == "CP0303"]
    out = compiled(store.snapshot, local_proxy())
    vhosts = {v["name"]: v for v in out["rds"]["local_15001"]["virtualHosts"]}
    ratings_route = vhosts["ratings.default.svc.cluster.local:9080"]["routes"][0]["route"]
    assert ratings_route["cluster"] == f"outbound|9080|v2|{FQDN}"


def test_a_virtual_service_bound_only_to_a_gateway_is_not_for_sidecars() -> None:
    gateway_only = vs(
        "gw", "2026-01-01T00:00:00Z", "v2", extra="  gateways: [istio-system/ingress]\n"
    )
    assert first_cluster([REVIEWS, gateway_only]) == f"outbound|9080||{FQDN}"
    with_mesh = vs("gw", "2026-01-01T00:00:00Z", "v2", extra="  gateways: [mesh, ingress]\n")
    assert first_cluster([REVIEWS, with_mesh]) == f"outbound|9080|v2|{FQDN}"


def test_virtual_service_exported_to_its_namespace_only_is_invisible_elsewhere() -> None:
    private = vs("private", "2026-01-01T00:00:00Z", "v2", extra='  exportTo: ["."]\n')
    assert first_cluster([REVIEWS, private]) == f"outbound|9080|v2|{FQDN}"
    other = local_proxy(namespace="other")
    assert first_cluster([REVIEWS, private], other) == f"outbound|9080||{FQDN}"


def test_short_hosts_resolve_in_the_namespace_of_the_virtual_service() -> None:
    elsewhere = vs("reviews", "2026-01-01T00:00:00Z", "v2").replace(
        "namespace: default", "namespace: other"
    )
    # hosts: [reviews] in namespace other means reviews.other: nothing to do with default's.
    assert first_cluster([REVIEWS, elsewhere]) == f"outbound|9080||{FQDN}"


def dr(
    namespace: str, name: str, subsets: str, extra: str = "", created: str = "2026-01-01T00:00:00Z"
) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: "{created}"}}
spec:
  host: reviews.default.svc.cluster.local
{extra}  subsets: {subsets}
"""


def subsets_seen(docs: list[str], namespace: str) -> list[str]:
    rule = snapshot_of(*docs).destination_rule(FQDN, namespace)
    return [s.name for s in rule.subsets] if rule else []


def test_destination_rule_lookup_prefers_the_client_namespace_then_the_service_then_root() -> None:
    base = REVIEWS.rsplit("---", 1)[0]  # the registry without its DestinationRule
    client_ns = dr("client", "mine", "[{name: mine, labels: {version: v1}}]")
    service_ns = dr("default", "svc", "[{name: svc, labels: {version: v1}}]")
    root_ns = dr("istio-system", "root", "[{name: root, labels: {version: v1}}]")
    docs = [base, client_ns, service_ns, root_ns]
    assert subsets_seen(docs, "client") == ["mine"]
    assert subsets_seen(docs, "elsewhere") == ["svc"]
    assert subsets_seen([base, root_ns], "elsewhere") == ["root"]


def test_a_destination_rule_applies_in_its_own_namespace_even_if_exported_elsewhere_only() -> None:
    base = REVIEWS.rsplit("---", 1)[0]
    exported = dr(
        "default", "svc", "[{name: v1, labels: {version: v1}}]", extra='  exportTo: ["other"]\n'
    )
    assert subsets_seen([base, exported], "default") == ["v1"]
    assert subsets_seen([base, exported], "other") == ["v1"]
    assert subsets_seen([base, exported], "third") == []


def test_rules_for_one_host_in_one_namespace_merge_subsets_and_keep_the_first_policy() -> None:
    base = REVIEWS.rsplit("---", 1)[0]
    first = dr(
        "default",
        "a",
        "[{name: v1, labels: {version: v1}}]",
        extra="  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
    )
    second = dr(
        "default",
        "b",
        "[{name: v1, labels: {version: v2}}, {name: v2, labels: {version: v2}}]",
        extra="  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
        created="2026-02-01T00:00:00Z",
    )
    rule = snapshot_of(base, second, first).destination_rule(FQDN, "default")
    assert rule is not None
    assert [(s.name, s.labels) for s in rule.subsets] == [
        ("v1", {"version": "v1"}),
        ("v2", {"version": "v2"}),
    ]
    assert (
        rule.traffic_policy is not None
        and rule.traffic_policy.load_balancer.simple == "ROUND_ROBIN"
    )


def test_subset_matching_no_pod_is_reported_with_its_labels() -> None:
    rule_doc = dr(
        "default",
        "reviews",
        "[{name: v1, labels: {version: v1}}, {name: v9, labels: {version: v9}}]",
    )
    snapshot = snapshot_of(REVIEWS.rsplit("---", 1)[0], rule_doc)
    rule = next(iter(snapshot.of_kind("DestinationRule").values()))
    [issue] = check_destination_rule(snapshot, rule)
    assert issue.code is Codes.DESTINATION_RULE_NO_PODS
    assert issue.path == "spec.subsets[1].labels"
    assert "subset 'v9' (version=v9) selects no pod" in issue.reason


def test_source_labels_are_decided_per_proxy_at_compile_time() -> None:
    by_source = vs("src", "2026-01-01T00:00:00Z", "v1").replace(
        "  http:\n  - route:",
        "  http:\n  - match: [{sourceLabels: {app: productpage}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route:",
    )
    productpage = local_proxy(labels={"app": "productpage"})
    other = local_proxy(labels={"app": "ratings"})
    assert first_cluster([REVIEWS, by_source], productpage) == f"outbound|9080|v2|{FQDN}"
    assert first_cluster([REVIEWS, by_source], other) == f"outbound|9080|v1|{FQDN}"


def test_a_virtual_service_private_to_the_clients_namespace_beats_an_older_public_one() -> None:
    public = vs("public", "2026-01-01T00:00:00Z", "v1")
    private = vs(
        "mine", "2026-06-01T00:00:00Z", "v2", hosts=f"[{FQDN}]", extra='  exportTo: ["."]\n'
    ).replace("namespace: default", "namespace: client")
    client = local_proxy(namespace="client")
    assert first_cluster([REVIEWS, public, private], client) == f"outbound|9080|v2|{FQDN}"
    # Elsewhere the private one is invisible: the public one applies.
    assert first_cluster([REVIEWS, public, private]) == f"outbound|9080|v1|{FQDN}"


def test_a_virtual_service_exported_to_the_client_by_name_beats_an_older_public_one() -> None:
    public = vs("public", "2026-01-01T00:00:00Z", "v1")
    named = vs("for-client", "2026-06-01T00:00:00Z", "v2", extra='  exportTo: ["client"]\n')
    client = local_proxy(namespace="client")
    assert first_cluster([REVIEWS, public, named], client) == f"outbound|9080|v2|{FQDN}"
    assert first_cluster([REVIEWS, public, named]) == f"outbound|9080|v1|{FQDN}"


def test_virtual_services_no_namespace_sees_together_are_not_a_conflict() -> None:
    a = vs(
        "a", "2026-01-01T00:00:00Z", "v1", hosts=f"[{FQDN}]", extra='  exportTo: ["."]\n'
    ).replace("namespace: default", "namespace: team-a")
    b = vs(
        "b", "2026-06-01T00:00:00Z", "v2", hosts=f"[{FQDN}]", extra='  exportTo: ["."]\n'
    ).replace("namespace: default", "namespace: team-b")
    store = store_of(REVIEWS, a, b)
    codes = [i.code.id for s in store.snapshot.status.values() for i in s.issues]
    assert "CP0303" not in codes
    both = vs("c", "2026-07-01T00:00:00Z", "v2", extra='  exportTo: ["team-a"]\n')
    store = store_of(REVIEWS, a, both)
    codes = [i.code.id for s in store.snapshot.status.values() for i in s.issues]
    assert codes.count("CP0303") == 1
