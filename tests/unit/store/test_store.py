"""The store keeps the last good version of a resource and retries broken ones in context."""

from __future__ import annotations

import textwrap

import yaml

from controlplane.api import InvalidResource, ResourceKey, load
from controlplane.store import Rejection, Store, Submission
from tests.documents import submissions as shared_submissions
from tests.support import meshes
from tests.unit.compile.helpers import REVIEWS

VS_KEY = ResourceKey("VirtualService", "default", "reviews")


def vs(subset: str, weight: int = 100) -> str:
    return meshes.resource(
        "VirtualService",
        "reviews",
        f"""
      hosts: [reviews]
      http:
      - route:
        - destination: {{host: reviews, subset: {subset}}}
          weight: {weight}
    """,
    )


def test_a_valid_update_becomes_effective_and_is_reported_in_the_change_set() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS))
    change = store.apply(upserts=submissions(vs("v1")))
    assert VS_KEY in change.changed
    assert store.snapshot.get(VS_KEY).spec.http[0].route[0].destination.subset == "v1"
    assert store.snapshot.status[VS_KEY].reconciled


def test_a_route_to_an_undefined_subset_keeps_the_last_good_version() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS) + submissions(vs("v1")))
    store.apply(upserts=submissions(vs("v9")))
    effective = store.snapshot.get(VS_KEY)
    assert effective.spec.http[0].route[0].destination.subset == "v1"
    status = store.snapshot.status[VS_KEY]
    assert status.accepted and not status.reconciled
    [issue] = [i for i in status.issues if i.code.title == "ReferencedSubsetNotFound"]
    assert issue.path == "spec.http[0].route[0].destination.subset"


def test_a_new_resource_broken_in_context_is_not_applied_until_the_context_is_fixed() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS))
    store.apply(upserts=submissions(vs("v3")))
    assert store.snapshot.get(VS_KEY) is None
    fixed_dr = REVIEWS.replace(
        "- {name: v2, labels: {version: v2}}",
        "- {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v2}}",
    )
    change = store.apply(
        upserts=[s for s in submissions(fixed_dr) if s.resource.kind == "DestinationRule"]
    )
    assert VS_KEY in change.changed
    assert store.snapshot.get(VS_KEY).spec.http[0].route[0].destination.subset == "v3"
    assert store.snapshot.status[VS_KEY].reconciled


def test_a_rejection_keeps_the_previous_version_and_records_why() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS) + submissions(vs("v1")))
    try:
        load(yaml.safe_load(textwrap.dedent(vs("v2", weight=-1))))
    except InvalidResource as exc:
        rejection = Rejection(VS_KEY, tuple(exc.issues), "test.yaml:3")
    change = store.apply(rejections=[rejection])
    assert VS_KEY not in change.changed and VS_KEY in change.status_changed
    assert store.snapshot.get(VS_KEY).spec.http[0].route[0].destination.subset == "v1"
    status = store.snapshot.status[VS_KEY]
    assert not status.accepted
    assert status.issues[0].field_message == "spec.http[0].route[0].weight: must not be negative"


def test_deleting_removes_the_resource_and_its_status() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS) + submissions(vs("v1")))
    change = store.apply(deletes=[VS_KEY])
    assert VS_KEY in change.changed
    assert store.snapshot.get(VS_KEY) is None
    assert VS_KEY not in store.snapshot.status


def test_resubmitting_an_identical_resource_changes_nothing() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS) + submissions(vs("v1")))
    version = store.snapshot.version
    change = store.apply(upserts=submissions(REVIEWS) + submissions(vs("v1")))
    assert not change
    assert store.snapshot.version == version


def test_endpoints_come_from_pods_selected_by_the_service() -> None:
    store = Store()
    store.apply(upserts=submissions(REVIEWS))
    endpoints = store.snapshot.endpoints("reviews.default.svc.cluster.local")
    assert [(e.address, e.port, e.labels["version"]) for e in endpoints] == [
        ("10.0.0.1", 8080, "v1"),
        ("10.0.0.2", 8080, "v2"),
    ]


def test_destination_rules_in_the_client_namespace_win_over_the_service_namespace() -> None:
    store = Store()
    client_dr = meshes.resource(
        "DestinationRule",
        "reviews-from-prod",
        """
      host: reviews.default.svc.cluster.local
      subsets:
      - {name: canary, labels: {version: v2}}
    """,
        namespace="prod",
    )
    store.apply(upserts=submissions(REVIEWS) + submissions(client_dr))
    host = "reviews.default.svc.cluster.local"
    from_prod = store.snapshot.destination_rule(host, "prod")
    from_default = store.snapshot.destination_rule(host, "default")
    assert from_prod is not None and [s.name for s in from_prod.subsets] == ["canary"]
    assert from_default is not None and [s.name for s in from_default.subsets] == ["v1", "v2"]


def submissions(text: str) -> list[Submission]:
    return shared_submissions(text, "test.yaml:1")
