"""Cluster mode's first snapshot and plain watches, without a cluster (tests/kube has the
real apiserver: test_coldstart.py)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from controlplane.api import ResourceKey
from controlplane.sources.kube.cluster import ClusterOptions, ClusterSource
from controlplane.sources.kube.listing import Gone, Listing, PlainWatch, kinds_for_kopf
from controlplane.sources.kube.watch import (
    WATCHED,
    EventFeed,
    StoreBridge,
    Update,
    apply_updates,
)
from controlplane.store import Store

NS = "shop"


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "5"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }


def pod(name: str, app: str, version: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app, "version": version}},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": NS, "generation": 1},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                ]
            }
        ],
    },
}
DR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": NS, "generation": 1},
    "spec": {
        "host": "reviews",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}


LISTED = {
    "/apis/networking.istio.io/v1/virtualservices": [VS],
    "/apis/networking.istio.io/v1/destinationrules": [DR],
    "/api/v1/services": [service("reviews")],
    "/api/v1/pods": [
        pod("r1", "reviews", "v1", "10.0.0.1"),
        pod("r2", "reviews", "v2", "10.0.0.2"),
        pod("r3", "reviews", "v1", "10.0.0.3"),
    ],
}


class FakeResponse:
    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.reason = "OK" if status == 200 else "Not Found"
        self.data = data

    def read(self) -> bytes:
        return self.data


class FakeApiClient:
    """The kubernetes ApiClient's two calls KubeApi makes, over ``LISTED``, two objects a
    page (as the apiserver pages with ``limit`` and ``continue``)."""

    def __init__(self, listed: dict[str, list[dict[str, Any]]]) -> None:
        self.listed = listed
        self.requests: list[str] = []

    def param_serialize(self, method: str, url: str, **_: Any) -> tuple[Any, ...]:
        return method, url, {}, None, None

    def call_api(self, method: str, url: str, **_: Any) -> FakeResponse:
        self.requests.append(url)
        path, _, query = url.partition("?")
        if path not in self.listed and not path.endswith(("services", "pods", "namespaces")):
            return FakeResponse(404, b"{}")  # no such kind (no CRD)
        items = [json.loads(json.dumps(i)) for i in self.listed.get(path, [])]
        start = int(parse_qs(query).get("continue", ["0"])[0])
        page = items[start : start + 2]
        more = {"continue": str(start + 2)} if start + 2 < len(items) else {}
        body = {"metadata": {"resourceVersion": "10", **more}, "items": page}
        return FakeResponse(200, json.dumps(body).encode())


def load(listed: dict[str, list[dict[str, Any]]]) -> tuple[Store, ClusterSource, list[Any]]:
    async def scenario() -> tuple[Store, ClusterSource, list[Any]]:
        store = Store()
        changes: list[Any] = []
        store.subscribe(lambda snapshot, change: changes.append(change))
        source = ClusterSource(ClusterOptions())
        source._api = FakeApiClient(listed)
        source._thread = SimpleNamespace(feed=EventFeed(lambda u: None), failed=None)  # type: ignore[assignment]
        bridge = StoreBridge(store, asyncio.get_running_loop())
        assert not source.ready()
        await source._load(store, bridge)
        return store, source, changes

    return asyncio.run(scenario())


def findings(store: Store) -> list[str]:
    return [str(i) for status in store.snapshot.status.values() for i in status.issues]


def test_the_first_listing_is_one_batch_and_reports_nothing_of_a_half_loaded_mesh():
    store, source, changes = load(LISTED)
    assert source.ready()
    assert len(changes) == 1  # one snapshot, complete
    assert findings(store) == []
    assert store.snapshot.get(ResourceKey("VirtualService", NS, "reviews")) is not None
    assert len(store.snapshot.of_kind("Pod")) == 3  # two pages of pods
    watches = {w.plural: w for w in source._watches}
    # The high-volume kinds, and the mesh ConfigMap (listed again as its watch starts).
    assert set(watches) == {"pods", "services", "endpointslices", "namespaces", "configmaps"}
    assert watches["configmaps"].scope is not None
    assert watches["pods"].keys == {ResourceKey("Pod", NS, f"r{i}") for i in (1, 2, 3)}
    assert watches["pods"].resource_version == "10"


def test_kind_by_kind_the_same_objects_report_findings_that_are_not_real():
    """What the one batch avoids: applied a kind at a time (as kopf's watches deliver them),
    the VirtualService is checked before its DestinationRule and Service exist."""
    store = Store()
    feed = EventFeed(lambda update: None)
    seen: set[str] = set()
    for path, items in LISTED.items():
        plural = path.rsplit("/", 1)[-1]
        updates = [feed.translate(None, dict(item), plural) for item in items]
        apply_updates(store, [u for u in updates if u is not None])
        seen |= set(findings(store))
    assert findings(store) == []
    assert any("CP030" in f for f in seen), seen


def test_kopf_follows_every_watched_kind_but_the_high_volume_ones():
    kopf = {plural for _, _, plural in kinds_for_kopf()}
    assert len(kinds_for_kopf()) == len(WATCHED) - 4
    assert {"pods", "services", "endpointslices", "namespaces"}.isdisjoint(kopf)
    assert {"virtualservices", "destinationrules", "secrets"} <= kopf


class FakeApi:
    """A watch that ends with 410 Gone, and a listing that lost one Service meanwhile."""

    def __init__(self, events: list[dict[str, Any]], relisted: list[dict[str, Any]]) -> None:
        self.events = events
        self.relisted = relisted
        self.watched_from: list[str] = []

    def watch(self, group: str, version: str, plural: str, rv: str, timeout: int, scope=None):
        self.watched_from.append(rv)
        if len(self.watched_from) == 1:
            yield from self.events
            raise Gone(plural)
        return

    def list(self, group: str, version: str, plural: str, scope=None) -> Listing:
        return Listing(group, version, plural, [dict(i) for i in self.relisted], "99")


def test_a_plain_watch_follows_events_and_after_410_lists_again_and_reports_deletions():
    submitted: list[Update] = []
    api = FakeApi(
        events=[
            {"type": "ADDED", "object": service("ratings") | {"kind": None}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
        ],
        relisted=[service("ratings"), service("details")],
    )
    feed = EventFeed(submitted.append)
    start = Listing("", "v1", "services", [], "10")
    watch = PlainWatch(
        api,  # type: ignore[arg-type]
        start,
        feed,
        submitted.append,
        keys={ResourceKey("Service", NS, "reviews")},
    )
    watch.stopping.wait = lambda timeout=None: watch.stopping.set() or True  # type: ignore[method-assign]
    original = watch._on

    def stop_after_relist(event: dict[str, Any]) -> None:
        original(event)

    watch._on = stop_after_relist  # type: ignore[method-assign]
    # Run: events, Gone, relist, a watch from the relisted version that ends at once, then
    # the loop goes on; stop it once the second watch has begun.
    calls = api.watch

    def watch_then_stop(*args: Any, **kwargs: Any):
        if len(api.watched_from) == 1:
            watch.stop()
        return calls(*args, **kwargs)

    api.watch = watch_then_stop  # type: ignore[method-assign]
    watch.run()
    assert api.watched_from == ["10", "99"]
    kinds = [(u.key.name, u.delete) for u in submitted]
    assert ("ratings", False) in kinds and ("details", False) in kinds
    assert ("reviews", True) in kinds  # gone while the watch was down
    assert watch.keys == {
        ResourceKey("Service", NS, "ratings"),
        ResourceKey("Service", NS, "details"),
    }
