"""The Gateway API status writer (part "gwapi"): only the leader writes, only what changed,
transition times kept while a condition holds, other controllers' route parents kept."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import yaml

from controlplane.api import load
from controlplane.api.issues import ResourceKey
from controlplane.status.gatewayapi import GatewayApiStatusWriter
from controlplane.store import Store, Submission

DOCS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, generation: 1}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps, generation: 1}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
"""
ROUTE = ResourceKey("HTTPRoute", "apps", "r")
OTHER_PARENT = {
    "parentRef": {"name": "elsewhere"},
    "controllerName": "example.com/other",
    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
}


class FakeClient:
    def __init__(self) -> None:
        self.objects: dict[ResourceKey, dict[str, Any]] = {ROUTE: {"parents": [OTHER_PARENT]}}
        self.puts: list[tuple[str, ResourceKey]] = []

    def get_status(self, plural: str, version: str, key: ResourceKey) -> Mapping[str, Any] | None:
        return self.objects.get(key, {})

    def put_status(
        self, plural: str, version: str, key: ResourceKey, status: Mapping[str, Any]
    ) -> bool:
        self.objects[key] = dict(status)
        self.puts.append((plural, key))
        return True


def store_with(text: str) -> Store:
    store = Store()
    store.apply([Submission(load(d)[0], (), None) for d in yaml.safe_load_all(text) if d])
    return store


def test_the_leader_writes_each_status_once_and_keeps_other_controllers_parents() -> None:
    async def run() -> None:
        store = store_with(DOCS)
        client = FakeClient()
        times = iter(["2026-12-07T10:00:00Z", "2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z"])
        writer = GatewayApiStatusWriter(store, client, now=lambda: next(times))
        await writer.write_all()
        assert sorted(p for p, _ in client.puts) == ["gateways", "httproutes"]
        parents = client.objects[ROUTE]["parents"]
        assert parents[0] == OTHER_PARENT and len(parents) == 2
        resolved = parents[1]["conditions"][1]
        assert (resolved["reason"], resolved["lastTransitionTime"]) == (
            "BackendNotFound",
            "2026-12-07T10:00:00Z",
        )
        await writer.write_all()
        assert len(client.puts) == 2  # nothing changed: nothing written
        svc = "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: apps}\nspec: {ports: [{port: 80}]}"
        store.apply([Submission(load(yaml.safe_load(svc))[0], (), None)])
        await writer.write_all()
        parents = client.objects[ROUTE]["parents"]
        accepted, resolved = parents[1]["conditions"]
        assert resolved["reason"] == "ResolvedRefs"
        assert resolved["lastTransitionTime"] == "2026-12-07T12:00:00Z"  # moved: new time
        assert accepted["lastTransitionTime"] == "2026-12-07T10:00:00Z"  # still True: kept
        assert parents[0] == OTHER_PARENT

    asyncio.run(run())


def test_a_follower_writes_nothing() -> None:
    async def run() -> None:
        store = store_with(DOCS)
        client = FakeClient()
        writer = GatewayApiStatusWriter(store, client, is_leader=lambda: False, poll=0.01)
        writer.start()
        await asyncio.sleep(0.1)
        await writer.stop()
        assert client.puts == []

    asyncio.run(run())
