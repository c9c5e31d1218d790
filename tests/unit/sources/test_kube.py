"""The kube source without a cluster: events to store updates, batching, resync."""

from __future__ import annotations

import asyncio

from controlplane.api import ResourceKey
from controlplane.api.issues import Codes
from controlplane.sources.kube import Resync, StoreBridge, Update, translate
from controlplane.store import Store

VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop", "generation": 3, "resourceVersion": "7"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    "status": {"conditions": [{"type": "Reconciled", "status": "True"}]},
}
KEY = ResourceKey("VirtualService", "shop", "reviews")


def test_a_valid_event_becomes_a_submission_without_status_or_resource_version():
    update = translate("ADDED", VS)
    assert update is not None and update.key == KEY and update.submission is not None
    resource = update.submission.resource
    assert resource.metadata.generation == 3 and resource.metadata.resource_version is None
    # A status write changes only resourceVersion and status: the resource reads the same.
    rewritten = {**VS, "metadata": {**VS["metadata"], "resourceVersion": "8"}, "status": {}}
    assert translate("MODIFIED", rewritten).submission.resource == resource


def test_an_invalid_event_becomes_a_rejection_naming_the_field_and_generation():
    bad = {
        **VS,
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}],
        },
    }
    update = translate("MODIFIED", bad)
    assert update.rejection is not None and update.rejection.generation == 3
    (issue,) = update.rejection.issues
    assert issue.code is Codes.INVALID_FIELD
    assert issue.field_message == "spec.http[0].route[0].weight: must not be negative"


def test_a_deleted_event_becomes_a_deletion_and_a_nameless_object_nothing():
    assert translate("DELETED", VS) == Update(KEY, delete=True)
    assert translate("ADDED", {"kind": "Pod", "metadata": {}}) is None


def test_the_bridge_applies_a_burst_as_one_store_update_where_the_last_event_wins():
    async def scenario() -> tuple[int, object]:
        store = Store()
        seen = []
        store.subscribe(lambda snapshot, change: seen.append(change))
        bridge = StoreBridge(store, asyncio.get_running_loop())
        first = translate("ADDED", VS)
        second = translate(
            "MODIFIED", {**VS, "spec": {**VS["spec"], "hosts": ["reviews", "ratings"]}}
        )
        bridge.submit(first)  # a burst: both queued before the loop runs the drain
        bridge.submit(second)
        await asyncio.sleep(0.05)
        changes, effective = len(seen), store.snapshot.get(KEY)
        # From another thread (kopf's), the update reaches the store on its own loop.
        await asyncio.to_thread(bridge.submit, translate("DELETED", VS))
        for _ in range(100):
            if store.snapshot.get(KEY) is None:
                break
            await asyncio.sleep(0.01)
        assert store.snapshot.get(KEY) is None
        return changes, effective

    changes, last = asyncio.run(scenario())
    assert changes == 1
    assert last.spec.hosts == ["reviews", "ratings"]


def test_resync_deletes_keys_missing_from_a_fresh_listing_but_not_newer_ones():
    submitted: list[Update] = []
    listing = {KEY}
    gone = ResourceKey("VirtualService", "shop", "details")
    resync = Resync(
        submitted.append,
        lambda g, v, p: set(listing) if p == "virtualservices" else set(),
        delay=0.01,
    )
    resync.observe(None, Update(KEY))
    resync.observe(None, Update(gone))
    assert resync.run() == [gone]
    assert submitted == [Update(gone, delete=True)]
    assert resync.run() == []  # reported once


def test_a_burst_of_replayed_events_schedules_one_resync():
    calls = []
    resync = Resync(lambda u: None, lambda g, v, p: calls.append(p) or set(), delay=0.05)
    for _ in range(5):
        resync.observe(None, Update(KEY))
    resync.observe("MODIFIED", Update(KEY))
    import time

    time.sleep(0.3)
    assert resync.runs == 1 and "virtualservices" in calls
