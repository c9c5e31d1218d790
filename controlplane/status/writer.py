"""Writes the store's verdict on every Istio resource back to the cluster.

Runs on the store's loop (it is a store listener); the HTTP calls happen on one worker
thread so that xDS never waits for the apiserver. Only the leader writes (see ``leader``);
a replica that becomes leader rewrites every status once. A status is written only when the
verdict changed (not for timestamps alone); it always carries the generation it is about
(``observedGeneration``), and the store's verdict is always about the latest generation it
has seen. A resource that was rejected or cannot be reconciled also gets one Warning Event
per generation and message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controlplane.api.crds import KINDS
from controlplane.api.issues import ResourceKey
from controlplane.api.mesh import LAST_ACCEPTED_MESH, MESH_CONFIG_KIND
from controlplane.api.unsupported import UNSUPPORTED_KINDS
from controlplane.status.conditions import rejection_event, same_verdict, status_body
from controlplane.status.leader_loop import LeaderLoop
from controlplane.status.verdict import PROGRAMMED, Programmed, Verdicts
from controlplane.store import ChangeSet, ResourceStatus, Snapshot, Store

log = logging.getLogger("controlplane.status")

_PLURALS = {k.kind: (k.group, k.versions[0], k.plural) for k in KINDS}
_PLURALS.update({k.kind: (k.group, k.versions[0], k.plural) for k in UNSUPPORTED_KINDS})


def _written(kind: str) -> bool:
    """Kinds whose verdict reaches the cluster: Istio's (status), the mesh config (Events on
    the istio ConfigMap it is read from)."""
    return kind in _PLURALS or kind == MESH_CONFIG_KIND


# The last accepted generation, kept on the resource itself so that a restarted operator (any
# replica) serves it while the current generation is refused (see the README, "Last good").
LAST_ACCEPTED = "lastAccepted"
# Kubernetes stores an object of about 1.5 MiB at most; a spec this large is not copied.
LAST_ACCEPTED_MAX_BYTES = 512 * 1024


def last_accepted(
    key: ResourceKey, status: ResourceStatus, effective: Any
) -> dict[str, Any] | None:
    """``{generation, spec}`` of the generation proxies are configured with, when that is
    the current one (reconciled); None otherwise (the one written before stays)."""
    if not status.reconciled or effective is None or status.generation is None:
        return None
    spec = effective.model_dump(mode="json", by_alias=True, exclude_unset=True).get("spec")
    if len(json.dumps(spec, separators=(",", ":"))) > LAST_ACCEPTED_MAX_BYTES:
        log.warning(
            "%s: the spec is larger than %d bytes: its last accepted generation is not kept "
            "across restarts",
            key,
            LAST_ACCEPTED_MAX_BYTES,
        )
        return None
    return {"generation": status.generation, "spec": spec}


class StatusClient(Protocol):
    """The two calls the writer makes (implemented with the kubernetes client below)."""

    def patch_status(
        self, group: str, version: str, plural: str, key: ResourceKey, status: dict[str, Any]
    ) -> Mapping[str, Any] | None: ...

    def create_event(self, namespace: str, event: dict[str, Any]) -> None: ...


class KubernetesStatusClient:
    """StatusClient over the official kubernetes client (blocking; used on a worker thread)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client  # part "gwapi": the Gateway API status writer's too
        self._custom = client.CustomObjectsApi(api_client)
        self._core_api: Any = None  # CoreV1Api, on first need (its import is slow, issue 14)
        self._exceptions = client.exceptions

    @property
    def _core(self) -> Any:
        if self._core_api is None:
            from kubernetes import client

            self._core_api = client.CoreV1Api(self.api_client)
        return self._core_api

    def patch_status(
        self, group: str, version: str, plural: str, key: ResourceKey, status: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        try:
            result = self._custom.patch_namespaced_custom_object_status(
                group, version, key.namespace, plural, key.name, {"status": status}
            )
        except self._exceptions.ApiException as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            raise
        return result if isinstance(result, Mapping) else None

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self._core.create_namespaced_event(namespace, event)

    def annotate_configmap(self, key: ResourceKey, name: str, value: str) -> None:
        """Set one annotation of a ConfigMap (the mesh config's last accepted version)."""
        try:
            self._core.patch_namespaced_config_map(
                key.name, key.namespace, {"metadata": {"annotations": {name: value}}}
            )
        except self._exceptions.ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to keep
                raise


class MemoryStatusClient:
    """Keeps what would be written (file mode: no cluster to write to). The statuses a
    cluster would show, for the debug port and to count the writes the Programmed condition
    causes."""

    def __init__(self) -> None:
        self.statuses: dict[ResourceKey, dict[str, Any]] = {}
        self.event_list: list[dict[str, Any]] = []

    def patch_status(
        self, group: str, version: str, plural: str, key: ResourceKey, status: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        self.statuses[key] = status
        return {"metadata": {}}

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.event_list = [*self.event_list[-99:], event]


class StatusWriter(LeaderLoop):
    def __init__(
        self,
        store: Store,
        client: StatusClient,
        is_leader: Callable[[], bool] = lambda: True,
        *,
        component: str = "controlplane",
        leadership_poll: float = 1.0,
        programmed: Verdicts | None = None,
        pending_grace: float = 1.0,
        pending_interval: float = 5.0,
    ) -> None:
        super().__init__("status-writer", is_leader, leadership_poll)
        self.store = store
        self.client = client
        self.component = component
        self.leadership_poll = leadership_poll
        self.written: dict[ResourceKey, dict[str, Any]] = {}
        self.events: set[tuple[ResourceKey, int | None, str]] = set()
        self.writes = 0
        self._dirty: set[ResourceKey] = set()
        # The Programmed condition, rate-limited: a verdict that settles (Programmed, a NACK,
        # a refusal) is written at once; "N of M proxies still on generation G" only once it
        # has lasted ``pending_grace`` and then at most every ``pending_interval``, so a
        # canary that converges in a second costs one write per resource and step.
        self.programmed = programmed
        self.pending_grace = pending_grace
        self.pending_interval = pending_interval
        self._due: dict[ResourceKey, float] = {}
        self._written_at: dict[ResourceKey, float] = {}
        store.subscribe(self._on_change)
        if programmed is not None:
            programmed.listeners.append(self._on_programmed)

    def _on_programmed(self, keys: set[ResourceKey]) -> None:
        tracker = self.programmed
        assert tracker is not None
        loop_time = asyncio.get_running_loop().time()
        for key in keys:
            if not _written(key.kind):
                continue
            verdict = tracker.verdicts.get(key)
            if verdict is not None and verdict.reason == "Pending":
                last = self._written_at.get(key, float("-inf"))
                due = max(loop_time + self.pending_grace, last + self.pending_interval)
                self._due[key] = min(self._due.get(key, due), due)
            else:
                self._due.pop(key, None)
                self._dirty.add(key)
        self._wake.set()

    def _before_round(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, due in list(self._due.items()):
            if due <= now:
                del self._due[key]
                self._dirty.add(key)

    def _next_wait(self) -> float:
        if not self._due:
            return self.leadership_poll
        now = asyncio.get_running_loop().time()
        return max(0.0, min(self.leadership_poll, min(self._due.values()) - now))

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        keys = {k for k in change.status_changed | change.changed if _written(k.kind)}
        if keys:
            self._dirty |= keys
            self._wake.set()

    def _became_leader(self) -> None:
        self.written.clear()  # another leader may have written since
        self._dirty |= {k for k in self.store.snapshot.status if _written(k.kind)}

    async def _write_round(self) -> bool:
        if not self._dirty:
            return False
        batch, self._dirty = self._dirty, set()
        snapshot = self.store.snapshot
        for key in sorted(batch, key=str):
            status = snapshot.status.get(key)
            if status is None:  # deleted: forget what was written and reported
                self.written.pop(key, None)
                self.events = {e for e in self.events if e[0] != key}
                continue
            try:
                await self._write(key, status)
            except Exception as exc:  # keep going; retry this key on the next round
                log.warning("writing status of %s failed: %s", key, exc)
                self._dirty.add(key)
        return bool(self._dirty)

    async def _write(self, key: ResourceKey, status: ResourceStatus) -> None:
        if key.kind == MESH_CONFIG_KIND:
            await self._mesh_config_event(key, status)
            return
        previous = self.written.get(key)
        body = status_body(status, previous)
        verdict = self.programmed.verdicts.get(key) if self.programmed is not None else None
        if verdict is not None:
            body["conditions"].append(_programmed_condition(verdict, previous, body))
        kept = last_accepted(key, status, self.store.snapshot.get(key))
        if kept is not None:
            body[LAST_ACCEPTED] = kept
        elif previous is not None and LAST_ACCEPTED in previous:
            body[LAST_ACCEPTED] = previous[LAST_ACCEPTED]  # a merge patch keeps it as well
        if previous is not None and same_verdict(previous, body):
            return
        group, version, plural = _PLURALS[key.kind]
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor, self.client.patch_status, group, version, plural, key, body
        )
        if result is None:
            return
        self.written[key] = body
        self.writes += 1
        self._written_at[key] = loop.time()
        if verdict is not None and verdict.rejections:
            await self._rejected_by_proxy_event(key, verdict, result)
        event = rejection_event(
            key,
            status,
            f"{group}/{version}",
            str((result.get("metadata") or {}).get("uid") or "") or None,
            component=self.component,
        )
        if event is None:
            return
        marker = (key, status.generation, event["message"])
        if marker in self.events:
            return
        self.events.add(marker)
        await loop.run_in_executor(self._executor, self.client.create_event, key.namespace, event)

    async def _rejected_by_proxy_event(
        self, key: ResourceKey, verdict: Programmed, result: Mapping[str, Any]
    ) -> None:
        """One Warning Event per generation and message when a proxy NACKed what this
        resource produced (Envoy's message and the proxy in it)."""
        marker = (key, verdict.generation, verdict.message)
        if marker in self.events:
            return
        self.events.add(marker)
        group, version, _ = _PLURALS[key.kind]
        event = programmed_event(
            key,
            verdict,
            f"{group}/{version}",
            str((result.get("metadata") or {}).get("uid") or "") or None,
            self.component,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.client.create_event, key.namespace, event)

    async def _mesh_config_event(self, key: ResourceKey, status: ResourceStatus) -> None:
        """The mesh config has no status of its own: a refused one (its last good version
        serving) gets a Warning Event on the istio ConfigMap it was read from; a good one is
        kept on the ConfigMap (annotation ``LAST_ACCEPTED_MESH``), for a restarted replica
        to serve while the ConfigMap holds a refused one."""
        configmap = ResourceKey("ConfigMap", key.namespace, key.name)
        effective = self.store.snapshot.get(key)
        annotate = getattr(self.client, "annotate_configmap", None)
        if status.accepted and status.reconciled and effective is not None and annotate:
            spec = effective.spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
            text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
            if self.written.get(key, {}).get(LAST_ACCEPTED_MESH) != text:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(
                    self._executor, annotate, configmap, LAST_ACCEPTED_MESH, text
                )
                self.written[key] = {LAST_ACCEPTED_MESH: text}
        event = rejection_event(configmap, status, "v1", None, component=self.component)
        if event is None:
            return
        marker = (key, None, event["message"])
        if marker in self.events:
            return
        self.events.add(marker)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.client.create_event, key.namespace, event)


def _programmed_condition(
    verdict: Programmed, previous: Mapping[str, Any] | None, body: Mapping[str, Any]
) -> dict[str, Any]:
    """The Programmed condition, keeping its ``lastTransitionTime`` while its status holds."""
    cond = verdict.condition()
    before = {c.get("type"): c for c in (previous or {}).get("conditions", [])}.get(PROGRAMMED)
    stamps = [c.get("lastTransitionTime") for c in body.get("conditions", [])]
    stamp = next((s for s in stamps if s), None) or _stamp()
    if before is not None and before.get("status") == cond["status"]:
        cond["lastTransitionTime"] = before.get("lastTransitionTime", stamp)
    else:
        cond["lastTransitionTime"] = _stamp()
    return cond


def _stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def programmed_event(
    key: ResourceKey, verdict: Programmed, api_version: str, uid: str | None, component: str
) -> dict[str, Any]:
    """The Warning Event for a resource whose output a proxy rejected (a NACK)."""
    stamp = _stamp()
    involved: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": key.kind,
        "name": key.name,
        "namespace": key.namespace,
    }
    if uid:
        involved["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{key.name}.", "namespace": key.namespace},
        "involvedObject": involved,
        "reason": "RejectedByProxy",
        "message": verdict.message[:1024],
        "type": "Warning",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
