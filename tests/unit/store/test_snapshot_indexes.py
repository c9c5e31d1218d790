"""A Snapshot is read, never written: indexes declare their kinds and are taken over by the
next snapshot only where the change left them valid; reading records nothing."""

from __future__ import annotations

import dataclasses

from controlplane.store import Store
from controlplane.store.reads import ReportingView, collecting
from controlplane.store.snapshot import _INDEXES, Snapshot
from controlplane.store.tokens import destination_rules_token, endpoints_token
from tests.documents import submissions
from tests.xds.mesh import MESH, canary

REVIEWS = "reviews.default.svc.cluster.local"


def snapshot_of(text: str) -> Snapshot:
    store = Store()
    store.apply(upserts=submissions(text))
    return store.snapshot


def test_every_index_declares_the_kinds_it_derives_from() -> None:
    names = {getattr(index, "attrname") for index in _INDEXES}  # noqa: B009
    assert "_services" in names and "_virtual_services_by_host" in names
    assert all(index.kinds for index in _INDEXES)


def test_indexes_whose_kinds_did_not_change_are_taken_over_as_they_are() -> None:
    old = snapshot_of(MESH)
    old.services  # noqa: B018 (computes the index)
    old.virtual_services_for(REVIEWS, "default")
    new = Snapshot(version=old.version + 1, resources=old.resources)
    new.take_over(old, {"VirtualService"})
    assert new.services is old.services
    assert vars(new).get("_virtual_services_by_host") is None


def test_lookups_the_change_touched_are_dropped() -> None:
    old = snapshot_of(MESH)
    old.endpoints(REVIEWS)
    old.endpoints("ratings.default.svc.cluster.local")
    new = Snapshot(version=old.version + 1, resources=old.resources)
    new.take_over_lookups(old, frozenset({endpoints_token(REVIEWS)}))
    assert new.endpoints("ratings.default.svc.cluster.local") is old.endpoints(
        "ratings.default.svc.cluster.local"
    )
    assert new.endpoints(REVIEWS) == old.endpoints(REVIEWS)


def test_a_snapshot_has_no_recording_state() -> None:
    fields = {f.name for f in dataclasses.fields(Snapshot)}
    assert not any("track" in name or "record" in name for name in fields)
    assert not hasattr(Snapshot, "start_recording")


def test_a_reporting_view_reports_the_tokens_of_each_read() -> None:
    snapshot = snapshot_of(MESH + "---\n" + canary(90, 10))
    view, tokens = collecting(snapshot)
    assert isinstance(view, ReportingView)
    assert view.destination_rule(REVIEWS, "default") is snapshot.destination_rule(
        REVIEWS, "default"
    )
    assert destination_rules_token(REVIEWS) in tokens
    assert view.endpoints(REVIEWS) == snapshot.endpoints(REVIEWS)
    assert endpoints_token(REVIEWS) in tokens
