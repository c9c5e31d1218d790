"""The cluster listing describe and diff use (``analyze/loading.py``), against a stand-in for
the kube client: each watched kind is read through the watch's own translation, a refused
object counts as refused (and its last accepted generation, kept in status, is served), and
nothing but GETs is sent. The real kube-apiserver test is tests/kube/test_describe_diff.py."""

from __future__ import annotations

import json
from typing import Any

import yaml

from controlplane.analyze.describe import describe_pod
from controlplane.analyze.loading import load_cluster
from tests.support.meshes import bookinfo, split


class _Response:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data

    def read(self) -> None:
        return None


class FakeApi:
    """Answers list GETs from the objects given, by path; records every request."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.requests: list[tuple[str, str]] = []

    def param_serialize(
        self, method: str, path: str, **_: Any
    ) -> tuple[str, str, dict, None, None]:
        return method, path, {}, None, None

    def call_api(self, method: str, url: str, **_: Any) -> _Response:
        self.requests.append((method, url))
        plural = url.rsplit("/", 1)[1]
        items = [o for o in self.objects if o["kind"].lower() + "s" == plural]
        if not items and plural not in ("pods", "services", "virtualservices", "destinationrules"):
            return _Response(404, b"")
        return _Response(200, json.dumps({"items": items}).encode())


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_a_refused_object_in_the_cluster_is_refused_and_its_last_accepted_version_served() -> None:
    good = _objects(split("reviews", {"v1": 90, "v2": 10}))[0]
    broken = json.loads(json.dumps(good))
    broken["metadata"]["generation"] = 3
    broken["spec"]["http"][0]["route"][0]["weight"] = -1
    broken["status"] = {"lastAccepted": {"generation": 2, "spec": good["spec"]}}
    api = FakeApi([*_objects(bookinfo()), broken])
    loaded = load_cluster(api)
    assert {m for m, _ in api.requests} == {"GET"}
    described = describe_pod(loaded, "reviews-v1")
    [refused] = described["refused"]
    assert refused["resource"] == "VirtualService default/reviews"
    assert refused["effect"] == "the last accepted version is still served"
    assert any("weight: must not be negative" in r for r in refused["reasons"])
    routes = described["services"][0]["virtualService"]["routes"]
    assert [d["weight"] for d in routes[0]["destinations"]] == [90, 10]


def test_in_a_cluster_only_pods_that_run_a_proxy_count_as_proxies() -> None:
    from controlplane.analyze.diff import compare

    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "batch-job", "namespace": "default", "labels": {"app": "batch"}},
        "status": {"podIP": "10.0.0.50"},
    }
    loaded = load_cluster(FakeApi([*_objects(bookinfo()), plain]))
    snapshot = loaded.snapshot
    # bookinfo's pods carry the injector's sidecar.istio.io/status; the batch pod does not.
    _, total, _ = compare(snapshot, snapshot, meshed_only=True)
    assert total == 6
    _, total, _ = compare(snapshot, snapshot, meshed_only=False)
    assert total == 7
    assert loaded.meshed_only
