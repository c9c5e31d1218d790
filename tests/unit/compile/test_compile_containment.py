"""A resource the compiler raises on is refused alone (issue 11, part 2): the store keeps
its last good version (``compile/check.py`` as the store's compile check), the finding names
the resource and the field, ``analyze`` reports the same finding, and the generators pass the
resource over when the failure shows only while compiling for a proxy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.analyze import analyze
from controlplane.api.resources import parse_resource
from controlplane.compile import SnapshotCompiler, clusters, http_routes
from controlplane.compile.check import check_resource
from controlplane.compile.proxy import proxy_from_node
from controlplane.compile.resources import CLUSTER, ROUTE
from controlplane.store import Store, Submission
from tests.support import meshes

MESH = meshes.join(meshes.reviews("10.0.0.1", "10.0.0.2"), meshes.ratings("10.0.0.3"))
PROXY = proxy_from_node(
    "sidecar~10.0.0.9~client.default~default.svc.cluster.local",
    {"NAMESPACE": "default", "LOCAL_OUTBOUND_PORT": "15001"},
)


def _vs(route_name: str, host: str = "ratings") -> str:
    return meshes.virtual_service(
        host,
        f"""
        http:
        - name: {route_name}
          route: [{{destination: {{host: {host}}}}}]
        """,
    )


def _dr(subset: str) -> str:
    return meshes.subsets("reviews", {subset: "v1", "v2": "v2"})


def _resources(text: str) -> list[Any]:
    import textwrap

    return [parse_resource(d) for d in yaml.safe_load_all(textwrap.dedent(text)) if d]


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid input the compiler raises on: a route named ``explode``, a subset ``explode``."""
    route_action = http_routes._route_action
    build_cluster = clusters.build_cluster

    def exploding_route_action(snapshot: Any, http: Any, *args: Any) -> Any:
        if http.name == "explode":
            raise OverflowError("value out of range for uint32")
        return route_action(snapshot, http, *args)

    def exploding_build_cluster(name: str, port: Any, policy: Any, subset: Any) -> Any:
        if subset is not None and subset.name == "explode":
            raise ValueError("injected")
        return build_cluster(name, port, policy, subset)

    monkeypatch.setattr(http_routes, "_route_action", exploding_route_action)
    monkeypatch.setattr(clusters, "build_cluster", exploding_build_cluster)


def _store() -> Store:
    store = Store(compile_check=check_resource)
    store.apply(upserts=[Submission(r) for r in _resources(MESH)])
    return store


def _apply(store: Store, text: str) -> None:
    store.apply(upserts=[Submission(r) for r in _resources(text)])


@pytest.mark.usefixtures("faults")
def test_a_virtual_service_that_fails_to_compile_keeps_its_last_good_version() -> None:
    store = _store()
    _apply(store, _vs("good"))
    _apply(store, _vs("explode"))
    snapshot = store.snapshot
    effective = snapshot.of_kind("VirtualService")
    (vs,) = effective.values()
    assert vs.spec.http[0].name == "good"
    (status,) = [s for k, s in snapshot.status.items() if k.name == "ratings"]
    assert status.accepted and not status.reconciled
    (issue,) = status.issues
    assert issue.code.id == "CP0307" and issue.path == "spec.http[0]"
    assert "OverflowError: value out of range for uint32" in issue.reason
    assert str(issue.resource) == "VirtualService default/ratings"
    # Every proxy still compiles, with the last good routes.
    routes = SnapshotCompiler(snapshot).compile(PROXY).of(ROUTE)
    assert routes
    # Fixing it brings it in.
    _apply(store, _vs("fixed"))
    (vs,) = store.snapshot.of_kind("VirtualService").values()
    assert vs.spec.http[0].name == "fixed"


@pytest.mark.usefixtures("faults")
def test_a_new_virtual_service_that_fails_to_compile_is_not_applied() -> None:
    store = _store()
    _apply(store, _vs("explode"))
    assert not store.snapshot.of_kind("VirtualService")


@pytest.mark.usefixtures("faults")
def test_a_destination_rule_that_fails_to_compile_keeps_its_last_good_version() -> None:
    store = _store()
    _apply(store, _dr("v1"))
    _apply(store, _dr("explode"))
    (dr,) = store.snapshot.of_kind("DestinationRule").values()
    assert dr.spec.subsets[0].name == "v1"
    (status,) = [s for k, s in store.snapshot.status.items() if k.kind == "DestinationRule"]
    assert [(i.code.id, i.path) for i in status.issues] == [("CP0307", "spec.subsets[0]")]
    assert not status.reconciled


@pytest.mark.usefixtures("faults")
def test_the_generators_pass_over_a_resource_that_fails_for_one_proxy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without the store's check (as if the failure showed for this proxy only).
    store = Store()
    _apply(store, MESH)
    _apply(store, meshes.join(_vs("explode"), _vs("good", host="reviews"), _dr("explode")))
    with caplog.at_level(logging.ERROR, "controlplane.compile"):
        resources = SnapshotCompiler(store.snapshot).compile(PROXY)
    (config,) = resources.of(ROUTE).values()
    hosts = {vh.name: vh for vh in config.message.virtual_hosts}
    ratings = hosts["ratings.default.svc.cluster.local:9080"]
    assert ratings.routes[0].name == "default"  # passed over: the default route
    reviews = hosts["reviews.default.svc.cluster.local:9080"]
    assert reviews.routes[0].name == "good"  # the other VirtualService is untouched
    names = set(resources.of(CLUSTER))
    assert "outbound|9080||reviews.default.svc.cluster.local" in names
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" not in names  # DR passed over
    logged = caplog.text
    assert "VirtualService default/ratings failed to compile" in logged
    assert "DestinationRule" in logged and "default/reviews" in logged


@pytest.mark.usefixtures("faults")
def test_analyze_reports_the_same_finding(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)
    (tmp_path / "vs.yaml").write_text(_vs("explode"))
    report = analyze([tmp_path])
    found = [i for i in report.issues if i.code.id == "CP0307"]
    assert len(found) == 1, report.issues
    assert str(found[0].resource) == "VirtualService default/ratings"
    assert found[0].path == "spec.http[0]" and found[0].origin == f"{tmp_path}/vs.yaml:1"


def _policy(name: str, action: str = "DENY", path: str = "/admin") -> str:
    return meshes.resource(
        "AuthorizationPolicy",
        name,
        {"action": action, "rules": [{"to": [{"operation": {"paths": [path]}}]}]},
        api_version="security.istio.io/v1",
    )


def test_an_authorization_policy_that_fails_to_compile_is_refused_and_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controlplane.compile import rbac

    translate = rbac.translate_rule

    def exploding(rule: Any, *args: Any, **kwargs: Any) -> Any:
        if rule.to and "/explode" in rule.to[0].operation.paths:
            raise OverflowError("injected")
        return translate(rule, *args, **kwargs)

    monkeypatch.setattr(rbac, "translate_rule", exploding)
    store = _store()
    _apply(store, _policy("guard"))
    _apply(store, _policy("guard", path="/explode"))
    snapshot = store.snapshot
    (policy,) = snapshot.of_kind("AuthorizationPolicy").values()
    assert policy.spec.rules[0].to[0].operation.paths == ["/admin"]  # last good serves
    (status,) = [s for k, s in snapshot.status.items() if k.kind == "AuthorizationPolicy"]
    assert not status.accepted
    assert [(i.code.id, i.path) for i in status.issues] == [("CP0307", "spec.rules[0]")]
    # A new policy the compiler fails on has no good version: refused, so it fails closed.
    _apply(store, _policy("other", path="/explode"))
    assert [p.key.name for p in store.snapshot.rejected("AuthorizationPolicy")] == ["other"]
    # Every proxy still compiles.
    assert SnapshotCompiler(store.snapshot).compile(PROXY).of(ROUTE)


def test_durations_stay_within_what_envoy_accepts() -> None:
    from controlplane.compile.protos import ENVOY_MAX_DURATION_SECONDS, duration

    assert ENVOY_MAX_DURATION_SECONDS == 9223372035
    longest = duration(315576000000)  # protobuf's (and Istio's) limit
    assert (longest.seconds, longest.nanos) == (9223372035, 0)
    rounded = duration(0.9999999999)
    assert (rounded.seconds, rounded.nanos) == (1, 0)  # nanos never reach 10^9
    assert (duration(1.5).seconds, duration(1.5).nanos) == (1, 500_000_000)
