"""The Kubernetes source: kopf watches the cluster and feeds the store.

The handlers are thin: each watch event becomes one store update (an upsert, a deletion or
the rejection of a resource that does not validate). All logic lives in ``translate``, a pure
function.

Threading: kopf runs in a thread of its own (its loop would otherwise wait on every task of
the xDS server when it stops, see FIELD_NOTES), while the Store, which is not thread-safe,
belongs to the xDS server's loop. ``StoreBridge`` carries events across: kopf's thread only
appends to a queue and schedules one drain with ``call_soon_threadsafe``; the drain runs on
the xDS loop and applies everything queued as one batch, so a listing of 5,000 Pods costs a
few store updates, not 5,000.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from controlplane.api import InvalidResource, ResourceKey, document_key, load
from controlplane.api.issues import Codes
from controlplane.store import Rejection, Store, Submission

log = logging.getLogger("controlplane.kube")

# (group, version, plural) of everything the mesh reads. Istio kinds are watched at their
# storage version: the apiserver serves every stored object in it whatever version it was
# written with (the versions share one schema).
WATCHED: tuple[tuple[str, str, str], ...] = (
    ("networking.istio.io", "v1", "virtualservices"),
    ("networking.istio.io", "v1", "destinationrules"),
    ("security.istio.io", "v1", "peerauthentications"),
    ("security.istio.io", "v1", "authorizationpolicies"),
    ("", "v1", "services"),
    ("discovery.k8s.io", "v1", "endpointslices"),
    ("", "v1", "pods"),
    ("", "v1", "namespaces"),
)

# Metadata that changes on every write (a status update included) without changing what
# the object means; dropped so that such writes do not look like changes to the store.
_VOLATILE_METADATA = ("resourceVersion", "managedFields")


@dataclass(frozen=True)
class Update:
    """One watch event as the store sees it: exactly one of the three is set."""

    key: ResourceKey
    submission: Submission | None = None
    rejection: Rejection | None = None
    delete: bool = False


def translate(event_type: str | None, raw: Mapping[str, Any]) -> Update | None:
    """A watch event (``ADDED``/``MODIFIED``/``DELETED``, or None for a listing) -> Update.

    Returns None for an object that names no resource (no kind or name).
    """
    doc = _normalized(raw)
    key = document_key(doc, default_namespace="default")
    if key is None:
        return None
    if event_type == "DELETED":
        return Update(key, delete=True)
    try:
        resource, issues = load(doc)
    except InvalidResource as exc:
        generation = doc.get("metadata", {}).get("generation")
        issues = tuple(i.with_context(key, None) for i in exc.issues)
        return Update(key, rejection=Rejection(key, issues, None, generation))
    return Update(key, submission=Submission(resource, tuple(issues), None))


def _normalized(raw: Mapping[str, Any]) -> dict[str, Any]:
    doc = dict(raw)
    meta = doc.get("metadata")
    if isinstance(meta, Mapping):
        doc["metadata"] = {k: v for k, v in meta.items() if k not in _VOLATILE_METADATA}
    return doc


class StoreBridge:
    """Hands updates from any thread to the store, on the store's own loop, in batches."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._queue: list[Update] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self.applied = 0  # updates applied so far (for tests and metrics)

    def submit(self, update: Update) -> None:
        """Queue one update (thread-safe); the store sees it on its loop soon after."""
        with self._lock:
            self._queue.append(update)
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Apply everything queued as one batch (runs on the store's loop)."""
        with self._lock:
            batch, self._queue = self._queue, []
            self._scheduled = False
        if not batch:
            return
        latest: dict[ResourceKey, Update] = {}
        for update in batch:  # the last event of a key wins
            latest.pop(update.key, None)
            latest[update.key] = update
        self.store.apply(
            upserts=[u.submission for u in latest.values() if u.submission is not None],
            deletes=[u.key for u in latest.values() if u.delete],
            rejections=[u.rejection for u in latest.values() if u.rejection is not None],
        )
        self.applied += len(batch)


def register_watch_handlers(
    registry: kopf.OperatorRegistry,
    submit: Callable[[Update], None],
    on_peering: Callable[[Mapping[str, Any]], None] | None = None,
    peering_plural: str = "clusterkopfpeerings",
) -> None:
    """Register one event handler per watched kind, each feeding ``submit``.

    ``on_peering`` (optional) sees every kopf peering object, for leadership (see
    ``controlplane.status.leader``).
    """

    def feed(event: Mapping[str, Any], **_: Any) -> None:
        raw = event.get("object")
        if not isinstance(raw, Mapping):
            return
        update = translate(event.get("type"), raw)
        if update is None:
            return
        if update.rejection is not None and any(
            i.code is Codes.UNKNOWN_KIND for i in update.rejection.issues
        ):
            return
        submit(update)

    for group, version, plural in WATCHED:
        kopf.on.event(group, version, plural, id=f"watch-{plural}", registry=registry)(feed)

    if on_peering is not None:
        callback = on_peering

        def peering(event: Mapping[str, Any], **_: Any) -> None:
            raw = event.get("object")
            if isinstance(raw, Mapping) and event.get("type") != "DELETED":
                callback(raw)

        kopf.on.event("kopf.dev", "v1", peering_plural, id="watch-peering", registry=registry)(
            peering
        )
