"""The status writer: writes verdict changes once, only while leading, and records Events."""

from __future__ import annotations

import asyncio

from controlplane.api import load
from controlplane.api.issues import ResourceKey
from controlplane.status.writer import StatusWriter
from controlplane.store import Store, Submission

KEY = ResourceKey("VirtualService", "shop", "reviews")


def vs(subset: str, generation: int):
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "generation": generation},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}],
        },
    }
    return load(doc)[0]


class FakeClient:
    def __init__(self) -> None:
        self.patches: list[tuple[ResourceKey, dict]] = []
        self.events: list[dict] = []

    def patch_status(self, group, version, plural, key, status):
        assert (group, version, plural) == ("networking.istio.io", "v1", "virtualservices")
        self.patches.append((key, status))
        return {"metadata": {"uid": "u-1"}}

    def create_event(self, namespace, event):
        self.events.append(event)


def test_only_the_leader_writes_and_each_verdict_once_with_one_event():
    leading = {"now": False}

    async def scenario() -> FakeClient:
        store = Store()
        client = FakeClient()
        writer = StatusWriter(store, client, lambda: leading["now"], leadership_poll=0.02)
        writer.start()
        store.apply(upserts=[Submission(vs("v3", 1))])
        await asyncio.sleep(0.1)
        assert client.patches == []  # not the leader
        leading["now"] = True
        await asyncio.sleep(0.1)
        store.apply(upserts=[Submission(vs("v3", 1))])  # same verdict again: nothing new
        await asyncio.sleep(0.1)
        await writer.stop()
        return client

    client = asyncio.run(scenario())
    assert len(client.patches) == 1
    key, status = client.patches[0]
    reconciled = {c["type"]: c for c in status["conditions"]}["Reconciled"]
    assert key == KEY and reconciled["status"] == "False" and status["observedGeneration"] == 1
    assert len(client.events) == 1 and client.events[0]["involvedObject"]["uid"] == "u-1"


def test_the_last_accepted_generation_is_kept_in_status_and_outlives_a_refused_one():
    """status.lastAccepted: written with the verdict when the current generation serves, left
    as it was when a later generation is refused (what a restarted operator serves)."""
    from controlplane.store import Rejection

    async def scenario() -> FakeClient:
        store = Store()
        client = FakeClient()
        writer = StatusWriter(store, client, leadership_poll=0.02)
        writer.start()
        store.apply(upserts=[Submission(vs("v3", 1))])
        await asyncio.sleep(0.1)
        # Generation 1 does not serve (subset v3 is defined nowhere): nothing kept yet.
        assert all("lastAccepted" not in status for _, status in client.patches)
        store.apply(upserts=[Submission(vs_without_subset(2))])
        await asyncio.sleep(0.1)
        kept = client.patches[-1][1]["lastAccepted"]
        assert kept["generation"] == 2
        assert kept["spec"]["http"][0]["route"][0]["destination"] == {"host": "reviews"}
        store.apply(rejections=[Rejection(KEY, (), None, 3)])
        await asyncio.sleep(0.1)
        await writer.stop()
        return client

    client = asyncio.run(scenario())
    last = client.patches[-1][1]
    assert last["observedGeneration"] == 3 and last["lastAccepted"]["generation"] == 2


def vs_without_subset(generation: int):
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "generation": generation},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    }
    return load(doc)[0]
