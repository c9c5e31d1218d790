"""Writes the Gateway API status (part "gwapi") onto GatewayClasses, Gateways and routes.

The status is computed by the conversion (store/gatewayapi.py) and carried by every
snapshot (``Snapshot.gateway_api_status``); this writer only sends it, from the leader, when
it changed. Each condition keeps its ``lastTransitionTime`` while its status stays the same
(as the specification asks). A route's ``parents[]`` entries of other controllers are kept:
only the entries of this controller's parents are replaced.

Writing a status never causes a push: the sources drop ``status`` on input, so the watch
event a write causes is the same resource as before (tests/unit/store/test_gatewayapi_status).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from controlplane.api.gatewayapi import BY_STORE_KIND, CONTROLLER_NAMES, GATEWAY_API_GROUP
from controlplane.api.issues import ResourceKey
from controlplane.status.leader_loop import LeaderLoop
from controlplane.store import ChangeSet, Snapshot, Store

log = logging.getLogger("controlplane.status")


class GatewayApiStatusClient(Protocol):
    def get_status(self, plural: str, version: str, key: ResourceKey) -> Mapping[str, Any] | None:
        """The object's current ``status`` (None: the object is gone)."""
        ...

    def put_status(
        self, plural: str, version: str, key: ResourceKey, status: Mapping[str, Any]
    ) -> bool:
        """Merge-patch ``status``; False when the object is gone."""
        ...


class KubernetesGatewayApiStatusClient:
    """Over the official kubernetes client (blocking; called on the writer's thread)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)
        self._exceptions = client.exceptions

    def get_status(self, plural: str, version: str, key: ResourceKey) -> Mapping[str, Any] | None:
        try:
            if key.namespace:
                found = self._custom.get_namespaced_custom_object_status(
                    GATEWAY_API_GROUP, version, key.namespace, plural, key.name
                )
            else:
                found = self._custom.get_cluster_custom_object_status(
                    GATEWAY_API_GROUP, version, plural, key.name
                )
        except self._exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        status = found.get("status") if isinstance(found, Mapping) else None
        return status if isinstance(status, Mapping) else {}

    def put_status(
        self, plural: str, version: str, key: ResourceKey, status: Mapping[str, Any]
    ) -> bool:
        body = {"status": dict(status)}
        try:
            if key.namespace:
                self._custom.patch_namespaced_custom_object_status(
                    GATEWAY_API_GROUP, version, key.namespace, plural, key.name, body
                )
            else:
                self._custom.patch_cluster_custom_object_status(
                    GATEWAY_API_GROUP, version, plural, key.name, body
                )
        except self._exceptions.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_transition_times(
    conditions: list[Mapping[str, Any]], before: list[Mapping[str, Any]] | None, now: str
) -> list[dict[str, Any]]:
    """Conditions with ``lastTransitionTime``: kept from ``before`` while the status is the
    same, ``now`` otherwise. ``observedGeneration`` null is left out (the schema wants an
    integer)."""
    previous = {c.get("type"): c for c in before or []}
    out = []
    for c in conditions:
        entry = {k: v for k, v in c.items() if v is not None}
        old = previous.get(c["type"])
        kept = old.get("lastTransitionTime") if old and old.get("status") == c["status"] else None
        entry["lastTransitionTime"] = kept or now
        out.append(entry)
    return out


def timed(status: Mapping[str, Any], before: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status with transition times, matched against ``before`` (per listener by
    name, per parent by parentRef)."""
    before = before or {}
    out: dict[str, Any] = dict(status)
    if "conditions" in status:
        out["conditions"] = with_transition_times(
            status["conditions"], before.get("conditions"), now
        )
    if "listeners" in status:
        old = {entry.get("name"): entry for entry in before.get("listeners") or []}
        out["listeners"] = [
            {
                **entry,
                "conditions": with_transition_times(
                    entry["conditions"], (old.get(entry["name"]) or {}).get("conditions"), now
                ),
            }
            for entry in status["listeners"]
        ]
    if "parents" in status:
        old_parents = before.get("parents") or []
        mine = []
        for entry in status["parents"]:
            match: Mapping[str, Any] = next(
                (p for p in old_parents if p.get("parentRef") == entry["parentRef"]), {}
            )
            mine.append(
                {
                    **entry,
                    "conditions": with_transition_times(
                        entry["conditions"], match.get("conditions"), now
                    ),
                }
            )
        theirs = [p for p in old_parents if p.get("controllerName") not in CONTROLLER_NAMES]
        out["parents"] = theirs + mine
    return out


def _comparable(status: Mapping[str, Any]) -> Any:
    """A status without its timestamps (what decides whether to write again)."""
    if isinstance(status, Mapping):
        return {k: _comparable(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_comparable(v) for v in status]
    return status


class GatewayApiStatusWriter(LeaderLoop):
    """Follows the store; the leader writes every Gateway API status that changed."""

    def __init__(
        self,
        store: Store,
        client: GatewayApiStatusClient,
        is_leader: Callable[[], bool] = lambda: True,
        *,
        poll: float = 1.0,
        now: Callable[[], str] = _now,
    ) -> None:
        super().__init__("gwapi-status", is_leader, poll)
        self.store = store
        self.client = client
        self.now = now
        self.written: dict[ResourceKey, Any] = {}
        self.writes = 0
        self._failed = False
        store.subscribe(self._on_change)

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        self._wake.set()

    def _became_leader(self) -> None:
        self.written.clear()  # another leader may have written since

    async def _write_round(self) -> bool:
        self._failed = False
        await self.write_all()
        return self._failed

    async def write_all(self) -> None:
        """Write every status that differs from what this writer last wrote."""
        found = self.store.snapshot.gateway_api_status
        for key in [k for k in self.written if k not in found]:
            del self.written[key]
        for key in sorted(found, key=str):
            wanted = _comparable(found[key])
            if self.written.get(key) == wanted:
                continue
            try:
                await self._write(key, found[key])
                self.written[key] = wanted
            except Exception as exc:  # keep going; retried on the next round
                log.warning("writing the status of %s failed: %s", key, exc)
                self._failed = True

    async def _write(self, key: ResourceKey, status: Mapping[str, Any]) -> None:
        kind = BY_STORE_KIND[key.kind]
        version = kind.versions[0]
        loop = asyncio.get_running_loop()
        before = await loop.run_in_executor(
            self._executor, self.client.get_status, kind.plural, version, key
        )
        if before is None:
            return  # deleted meanwhile
        body = timed(status, before, self.now())
        await loop.run_in_executor(
            self._executor, self.client.put_status, kind.plural, version, key, body
        )
        self.writes += 1
