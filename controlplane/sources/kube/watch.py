"""The Kubernetes source's watch: kopf's event handlers feed the store.

The handlers are thin: each watch event becomes one store update (an upsert, a deletion or
the rejection of a resource that does not validate). All logic lives in ``translate``, a pure
function.

Threading: kopf runs in a thread of its own (its loop would otherwise wait on every task of
the xDS server when it stops, see FIELD_NOTES), while the Store, which is not thread-safe,
belongs to the xDS server's loop. ``StoreBridge`` carries events across: kopf's thread only
appends to a queue and schedules one drain with ``call_soon_threadsafe``; the drain runs on
the xDS loop and applies everything queued as one batch, so a listing of 5,000 Pods costs a
few store updates, not 5,000.

Neighbours: ``operator`` runs these handlers in the kopf thread; ``cluster`` is the Source
that the composition root (``controlplane.app``) starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.api import InvalidResource, ResourceKey, document_key, load, load_mesh_config
from controlplane.api.credentials import Secret
from controlplane.api.gatewayapi import GATEWAY_API_GROUP, GATEWAY_API_KINDS
from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.mesh import LAST_ACCEPTED_MESH, MESH_CONFIG_KEY
from controlplane.api.unsupported import UNSUPPORTED_KINDS
from controlplane.sources.files import ReadResult, is_mesh_configmap, mesh_of_configmap
from controlplane.store import Rejection, Store, Submission
from controlplane.store.liveness import WatchLiveness

if TYPE_CHECKING:  # kopf is imported by the kopf thread, off the start's path (issue 14)
    import kopf

log = logging.getLogger("controlplane.kube")

# (group, version, plural) of everything the mesh reads. Istio kinds are watched at their
# storage version: the apiserver serves every stored object in it whatever version it was
# written with (the versions share one schema).
WATCHED: tuple[tuple[str, str, str], ...] = (
    ("networking.istio.io", "v1", "virtualservices"),
    ("networking.istio.io", "v1", "destinationrules"),
    ("networking.istio.io", "v1", "serviceentries"),
    ("networking.istio.io", "v1", "workloadentries"),
    ("networking.istio.io", "v1", "gateways"),
    ("networking.istio.io", "v1", "sidecars"),  # part "sidecar"
    ("security.istio.io", "v1", "peerauthentications"),
    ("security.istio.io", "v1", "authorizationpolicies"),
    ("security.istio.io", "v1", "requestauthentications"),
    ("telemetry.istio.io", "v1", "telemetries"),  # part "telemetry"
    ("", "v1", "services"),
    ("discovery.k8s.io", "v1", "endpointslices"),
    ("", "v1", "pods"),
    ("", "v1", "namespaces"),
    # Gateway credentials (credentialName); only credential-shaped ones are kept, see translate.
    ("", "v1", "secrets"),
    # Istio kinds not implemented here, watched to be reported (api/unsupported.py). Their
    # CRDs may be missing: kopf then waits for them, and the resync lists them as empty.
    *((k.group, k.versions[0], k.plural) for k in UNSUPPORTED_KINDS),
    # part "gwapi" (issue 16): the Kubernetes Gateway API. Its CRDs come from upstream and may
    # be missing: kopf then waits for them, as for the kinds above.
    *((GATEWAY_API_GROUP, k.versions[0], k.plural) for k in GATEWAY_API_KINDS),
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
    # The last accepted generation (the resource's ``status.lastAccepted``), for the store to
    # serve when this one is refused and it has no good version of its own (after a restart).
    restored: Any = None


# The mesh config: the ``istio`` ConfigMap of the root namespace (its ``mesh`` key), as istiod
# reads it. Watched on its own (every ConfigMap event is filtered down to that one).
MESH_CONFIGMAP: tuple[str, str, str] = ("", "v1", "configmaps")


def translate_mesh_configmap(event_type: str | None, raw: Mapping[str, Any]) -> Update | None:
    """An event of the istio ConfigMap -> the ``MeshConfig`` resource's Update (None for any
    other ConfigMap). Its findings name the ConfigMap and ``data.mesh.<field>``."""
    doc = _normalized(raw)
    if not is_mesh_configmap(doc, default_namespace=""):
        return None
    if event_type == "DELETED":
        return Update(MESH_CONFIG_KEY, delete=True)  # istiod's defaults apply again
    meta = doc.get("metadata") or {}
    origin = f"ConfigMap {meta.get('namespace')}/{meta.get('name')}"
    result = ReadResult()
    mesh_of_configmap(doc, origin, result)
    if result.rejections:
        rejection = result.rejections[-1]
        kept = _last_accepted_mesh(meta.get("annotations"))
        if kept is not None:
            served = Issue(
                Codes.LAST_GOOD_SERVED,
                "",
                f"the last accepted mesh config (annotation {LAST_ACCEPTED_MESH}) is served",
                MESH_CONFIG_KEY,
                origin,
            )
            rejection = Rejection(MESH_CONFIG_KEY, (*rejection.issues, served), origin, None, None)
        return Update(MESH_CONFIG_KEY, rejection=rejection, restored=kept)
    if result.submissions:
        return Update(MESH_CONFIG_KEY, submission=result.submissions[-1])
    return Update(MESH_CONFIG_KEY, delete=True)  # no ``mesh`` key: the defaults


def _last_accepted_mesh(annotations: Any) -> Any:
    """The mesh config the status writer kept on the ConfigMap, if it still reads."""
    text = annotations.get(LAST_ACCEPTED_MESH) if isinstance(annotations, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        resource, _ = load_mesh_config(json.loads(text))
    except (InvalidResource, ValueError):
        return None
    return resource


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
    generation = doc.get("metadata", {}).get("generation")
    kept = _last_accepted(doc, generation)
    try:
        resource, issues = load(doc)
    except InvalidResource as exc:
        refused = tuple(i.with_context(key, None) for i in exc.issues)
        if kept is not None:
            refused += (
                Issue(
                    Codes.LAST_GOOD_SERVED,
                    "",
                    f"the last accepted generation {kept.metadata.generation} is served",
                    key,
                ),
            )
        # A Secret's content is never kept beyond what the credential model decoded.
        content = None if key.kind == Secret.__name__ else doc
        return Update(
            key, rejection=Rejection(key, refused, None, generation, content), restored=kept
        )
    if isinstance(resource, Secret) and not resource.is_credential:
        # Not a credential (a token, a registry login...): the store need not hold it; a
        # deletion forgets one that used to be a credential.
        return Update(key, delete=True)
    return Update(key, submission=Submission(resource, tuple(issues), None), restored=kept)


def _last_accepted(doc: Mapping[str, Any], generation: Any) -> Any:
    """The resource as of its last accepted generation (kept in ``status.lastAccepted`` by
    the status writer), if that is an older generation and still reads; else None."""
    status = doc.get("status")
    kept = status.get("lastAccepted") if isinstance(status, Mapping) else None
    if not isinstance(kept, Mapping) or not isinstance(kept.get("spec"), Mapping):
        return None
    kept_generation = kept.get("generation")
    if not isinstance(kept_generation, int) or kept_generation == generation:
        return None
    meta = doc.get("metadata")
    old = {
        **doc,
        "metadata": {**(meta if isinstance(meta, Mapping) else {}), "generation": kept_generation},
        "spec": dict(kept["spec"]),
    }
    try:
        resource, _ = load(old)
    except InvalidResource:
        return None
    return resource


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
        apply_updates(self.store, batch)
        self.applied += len(batch)


def apply_updates(store: Store, batch: list[Update]) -> None:
    """Apply ``batch`` to ``store`` as one change (the last event of a key wins)."""
    latest: dict[ResourceKey, Update] = {}
    for update in batch:
        latest.pop(update.key, None)
        latest[update.key] = update
    try:
        store.apply(
            upserts=[u.submission for u in latest.values() if u.submission is not None],
            deletes=[u.key for u in latest.values() if u.delete],
            rejections=[u.rejection for u in latest.values() if u.rejection is not None],
            restored=[u.restored for u in latest.values() if u.restored is not None],
        )
    except Exception:  # a listener's bug must not stop the watch; the resync repairs
        log.exception("applying %d watch events failed", len(latest))


Lister = Callable[[str, str, str], set[ResourceKey]]


class Resync:
    """Finds deletions that a watch gap hid, and reports them as deletions.

    kopf resumes a broken watch from its last resourceVersion when it can; when the
    apiserver answers 410 Gone (after its own restart, or after a long gap) kopf lists the
    kind again and replays every object as an event of type None, but says nothing of the
    objects that were deleted meanwhile. So: after every burst of such replays (the first
    listing at start included, which costs one extra listing and finds nothing), every
    watched kind is listed once more, and each key the store holds that the listing lacks,
    and that has had no event since the listing began, is deleted.
    """

    def __init__(
        self,
        submit: Callable[[Update], None],
        lister: Lister,
        delay: float = 2.0,
        kinds: tuple[tuple[str, str, str], ...] = WATCHED,
    ) -> None:
        self.submit = submit
        self.lister = lister
        self.delay = delay
        self.kinds = kinds
        self.runs = 0
        self._seen: dict[ResourceKey, float] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def observe(self, event_type: str | None, update: Update) -> None:
        """Record one event (kopf's thread); a replayed one schedules a resync."""
        with self._lock:
            if update.delete:
                self._seen.pop(update.key, None)
            else:
                self._seen[update.key] = time.monotonic()
        if event_type is None:
            self.schedule()

    def schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()  # replays come in bursts: wait for the quiet after
            self._timer = threading.Timer(self.delay, self.run)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def run(self) -> list[ResourceKey]:
        """List every kind; submit deletions for keys gone while nobody watched."""
        started = time.monotonic()
        present: dict[str, set[ResourceKey]] = {}
        for group, version, plural in self.kinds:
            try:
                keys = self.lister(group, version, plural)
            except Exception as exc:  # try again on the next replay
                log.warning("resync: listing %s failed: %s", plural, exc)
                return []
            for key in keys:
                present.setdefault(key.kind, set()).add(key)
            present.setdefault(_kind_of(group, plural), set())
        with self._lock:
            gone = [
                key
                for key, seen in self._seen.items()
                if key.kind in present and key not in present[key.kind] and seen < started
            ]
            for key in gone:
                del self._seen[key]
        for key in gone:
            log.info("resync: %s was deleted while the watch was down", key)
            self.submit(Update(key, delete=True))
        self.runs += 1
        return gone


_KIND_OF_PLURAL = {
    "virtualservices": "VirtualService",
    "destinationrules": "DestinationRule",
    "serviceentries": "ServiceEntry",
    "workloadentries": "WorkloadEntry",
    "gateways": "Gateway",
    "sidecars": "Sidecar",
    "peerauthentications": "PeerAuthentication",
    "authorizationpolicies": "AuthorizationPolicy",
    "requestauthentications": "RequestAuthentication",
    "telemetries": "Telemetry",  # part "telemetry"
    "services": "Service",
    "endpointslices": "EndpointSlice",
    "pods": "Pod",
    "namespaces": "Namespace",
    "secrets": "Secret",
    **{k.plural: k.kind for k in UNSUPPORTED_KINDS},
}

# part "gwapi": kinds whose plural another group shares (Gateway API ``gateways``).
_KIND_OF_GROUP_PLURAL = {(GATEWAY_API_GROUP, k.plural): k.store_kind for k in GATEWAY_API_KINDS}
for _gwapi in GATEWAY_API_KINDS:
    _KIND_OF_PLURAL.setdefault(_gwapi.plural, _gwapi.kind)


def _kind_of(group: str, plural: str) -> str:
    return _KIND_OF_GROUP_PLURAL.get((group, plural)) or _KIND_OF_PLURAL.get(plural, plural)


kind_of = _kind_of


def kubernetes_lister(api_client: Any) -> Lister:
    """A Lister over the kubernetes client (names only are needed, but lists are full)."""
    import json

    def list_keys(group: str, version: str, plural: str) -> set[ResourceKey]:
        path = f"/api/{version}/{plural}" if not group else f"/apis/{group}/{version}/{plural}"
        method, url, headers, body, _ = api_client.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = api_client.call_api(method, url, header_params=headers, body=body)
        response.read()
        if response.status == 404:
            return set()  # the kind's CRD is not installed: nothing of it exists
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        body = json.loads(response.data)
        kind = _KIND_OF_PLURAL[plural]
        api_version = f"{group}/{version}" if group else version
        keys = set()
        for item in body.get("items", []):
            doc = {"kind": kind, "apiVersion": api_version, **item}
            key = document_key(doc, default_namespace="default")
            if key is not None:
                keys.add(key)
        return keys

    return list_keys


def newest_version_lister(api_client: Any) -> Callable[[str, str, str], int | None]:
    """The newest resourceVersion among the objects of a kind (None: none, or no such kind),
    for the watch-liveness check (``controlplane.store.liveness``)."""

    def newest(group: str, version: str, plural: str) -> int | None:
        path = f"/api/{version}/{plural}" if not group else f"/apis/{group}/{version}/{plural}"
        method, url, headers, body, _ = api_client.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = api_client.call_api(method, url, header_params=headers, body=body)
        response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        versions = []
        for item in json.loads(response.data).get("items", []):
            value = (item.get("metadata") or {}).get("resourceVersion")
            if isinstance(value, str) and value.isdigit():
                versions.append(int(value))
        return max(versions, default=None)

    return newest


def probe_liveness(
    liveness: WatchLiveness,
    newest: Callable[[str, str, str], int | None],
    kinds: tuple[tuple[str, str, str], ...] = WATCHED,
) -> list[str]:
    """List each quiet watched kind (no event for half the stall limit) and tell ``liveness``
    whether its watch is in step; busy kinds prove themselves by their events. Returns the
    kinds found behind."""
    ages = liveness.ages()
    behind = []
    for group, version, plural in kinds:
        if ages.get(plural, liveness.stall_after) < liveness.stall_after / 2:
            continue
        try:
            found = newest(group, version, plural)
        except Exception as exc:  # a failed listing proves nothing: the watch stays unrefreshed
            log.warning("watch liveness: listing %s failed: %s", plural, exc)
            continue
        if not liveness.listed(plural, found):
            behind.append(plural)
    return behind


class EventFeed:
    """One watch event -> translated, recorded for the resync and liveness, its findings
    logged once (as the file source does, not on every event), and submitted. Shared by
    kopf's handlers, the first listing and the plain watches (``listing``)."""

    def __init__(
        self,
        submit: Callable[[Update], None],
        resync: Resync | None = None,
        liveness: WatchLiveness | None = None,
    ) -> None:
        self.submit = submit
        self.resync = resync
        self.liveness = liveness
        self._reported: dict[ResourceKey, frozenset[Issue]] = {}

    def report(self, update: Update) -> None:
        found = (
            update.rejection.issues
            if update.rejection is not None
            else update.submission.issues
            if update.submission is not None
            else ()
        )
        if update.delete:
            self._reported.pop(update.key, None)
            return
        if not found:
            self._reported.pop(update.key, None)  # the common case: nothing kept per object
            return
        issues = frozenset(found)
        if self._reported.get(update.key) == issues:
            return
        self._reported[update.key] = issues
        for issue in sorted(issues, key=str):
            level = logging.ERROR if issue.severity is Level.ERROR else logging.WARNING
            log.log(level, "%s", issue)

    def alive(self, plural: str, resource_version: Any) -> None:
        if self.liveness is not None:
            self.liveness.event(plural, resource_version)

    def translate(
        self, event_type: str | None, raw: Mapping[str, Any], plural: str
    ) -> Update | None:
        """The event's Update, recorded and reported, or None if nothing is to be submitted."""
        if self.liveness is not None:
            meta = raw.get("metadata")
            self.liveness.event(plural, meta.get("resourceVersion") if meta else None)
        update = translate(event_type, raw)
        if update is None:
            return None
        if self.resync is not None:
            self.resync.observe(event_type, update)
        self.report(update)
        if update.rejection is not None and any(
            i.code is Codes.UNKNOWN_KIND for i in update.rejection.issues
        ):
            return None
        return update

    def __call__(
        self, event_type: str | None, raw: Mapping[str, Any], plural: str
    ) -> Update | None:
        """Translate and submit; returns what was submitted."""
        update = self.translate(event_type, raw, plural)
        if update is not None:
            self.submit(update)
        return update


class MeshConfigFeed(EventFeed):
    """The istio ConfigMap's events (``translate_mesh_configmap``), for its plain watch: a
    deletion made before kopf's ConfigMap watch started would otherwise go unseen."""

    def translate(
        self, event_type: str | None, raw: Mapping[str, Any], plural: str
    ) -> Update | None:
        self.alive(plural, (raw.get("metadata") or {}).get("resourceVersion"))
        update = translate_mesh_configmap(event_type, raw)
        if update is not None:
            self.report(update)
        return update


def register_watch_handlers(
    registry: kopf.OperatorRegistry,
    submit: Callable[[Update], None],
    on_peering: Callable[[Mapping[str, Any]], None] | None = None,
    peering_plural: str = "clusterkopfpeerings",
    resync: Resync | None = None,
    liveness: WatchLiveness | None = None,
    kinds: tuple[tuple[str, str, str], ...] = WATCHED,
    feed: EventFeed | None = None,
) -> None:
    """Register one event handler per kind of ``kinds``, each feeding ``submit``.

    ``on_peering`` (optional) sees every kopf peering object, for leadership (see
    ``controlplane.status.leader``).
    """
    import kopf

    events = feed if feed is not None else EventFeed(submit, resync, liveness)
    report = events.report

    def fed_by(plural: str) -> Callable[..., None]:
        def handler(event: Mapping[str, Any], **_: Any) -> None:
            raw = event.get("object")
            if isinstance(raw, Mapping):
                events(event.get("type"), raw, plural)

        return handler

    if liveness is not None:
        liveness.watching(plural for _, _, plural in WATCHED)
    for group, version, plural in kinds:
        handler_id = f"watch-{plural}" if group != GATEWAY_API_GROUP else f"watch-gwapi-{plural}"
        kopf.on.event(group, version, plural, id=handler_id, registry=registry)(fed_by(plural))

    def mesh_config(event: Mapping[str, Any], **_: Any) -> None:
        raw = event.get("object")
        if not isinstance(raw, Mapping):
            return
        update = translate_mesh_configmap(event.get("type"), raw)
        if update is None:
            return
        report(update)
        submit(update)

    group, version, plural = MESH_CONFIGMAP
    kopf.on.event(
        group,
        version,
        plural,
        id="watch-mesh-config",
        registry=registry,
        when=lambda name, namespace, **_: is_mesh_configmap(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
            }
        ),
    )(mesh_config)

    if on_peering is not None:
        callback = on_peering

        def peering(event: Mapping[str, Any], **_: Any) -> None:
            raw = event.get("object")
            if isinstance(raw, Mapping) and event.get("type") != "DELETED":
                callback(raw)

        kopf.on.event("kopf.dev", "v1", peering_plural, id="watch-peering", registry=registry)(
            peering
        )
