"""Cluster mode's first snapshot, and a plain list-and-watch for the high-volume kinds.

At start every watched kind is listed once (paginated, a few kinds at a time) and the whole
listing goes to the store as ONE batch, before anything serves: the first snapshot a proxy
sees is complete, and no in-context finding comes from a half-loaded mesh (a VirtualService
listed before its DestinationRule). Readiness waits for it.

Afterwards the Istio kinds keep arriving through kopf's handlers (``watch``). Pods, Services,
EndpointSlices and Namespaces do not: kopf's per-object machinery (a worker task, a memory
and a handler call per object, and a second full listing it replays as events) cost most of
a cold start at a few thousand objects (see bench/coldstart.py and bench/README.md). They are
followed by ``PlainWatch`` instead, a watch from the listing's ``resourceVersion`` in a
thread of its own: every event becomes the same ``Update`` as kopf's (``translate``). When
the apiserver says the version is too old (410 Gone), the kind is listed again; the keys it
no longer holds are reported deleted.

Neighbours: ``cluster`` runs ``initial_listing`` in ``ClusterSource.open`` and starts the
watches with the kopf thread; ``watch`` translates and reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from controlplane.api import ResourceKey
from controlplane.sources.kube.watch import WATCHED, EventFeed, Update, kind_of

log = logging.getLogger("controlplane.kube")

# Followed by PlainWatch rather than kopf: the kinds that come by the thousand, by
# (group, plural).
PLAIN_WATCHED: frozenset[tuple[str, str]] = frozenset(
    {("", "pods"), ("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "namespaces")}
)

PAGE = 2000  # objects per listing page: bounds one response's memory


def api_path(group: str, version: str, plural: str) -> str:
    return f"/api/{version}/{plural}" if not group else f"/apis/{group}/{version}/{plural}"


@dataclass(frozen=True)
class Scope:
    """Part of a kind: one namespace and a field selector (the mesh ConfigMap)."""

    namespace: str
    field_selector: str


def _scoped(
    group: str, version: str, plural: str, scope: Scope | None
) -> tuple[str, dict[str, str]]:
    if scope is None:
        return api_path(group, version, plural), {}
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{base}/namespaces/{scope.namespace}/{plural}", {"fieldSelector": scope.field_selector}


class Gone(Exception):
    """The apiserver no longer has the resourceVersion a watch asked for (410)."""


@dataclass
class Listing:
    """One kind, listed: its objects (as documents with kind and apiVersion) and the
    resourceVersion to watch from. ``found`` is False when the kind does not exist (no CRD)."""

    group: str
    version: str
    plural: str
    items: list[Any] = field(default_factory=list)  # documents, or what convert made
    resource_version: str | None = None
    found: bool = True
    keys: set[ResourceKey] = field(default_factory=set)  # what the first listing held


class KubeApi:
    """Raw JSON GETs and watches over the kubernetes client's connection and credentials
    (no model objects: decoding the kubernetes client's models costs more than the rest)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def _get(self, path: str, query: dict[str, Any], timeout: Any = None) -> Any:
        url = path + ("?" + urlencode(query) if query else "")
        method, full, headers, body, _ = self.api_client.param_serialize(
            "GET", url, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        return self.api_client.call_api(
            method, full, header_params=headers, body=body, _request_timeout=timeout
        )

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``: the status and the decoded body (None unless JSON)."""
        response = self._get(path, {}, timeout=(5, 30))
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None

    def post(self, path: str, body: Any) -> int:
        """POST ``body`` as JSON to ``path``; the status."""
        method, url, headers, payload, _ = self.api_client.param_serialize(
            "POST",
            path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, body=payload, _request_timeout=(5, 30)
        )
        response.read()
        return int(response.status)

    def list(
        self,
        group: str,
        version: str,
        plural: str,
        convert: Callable[[dict[str, Any]], Any] | None = None,
        scope: Scope | None = None,
    ) -> Listing:
        """Every object of the kind, a page at a time. With ``convert``, the listing holds
        what it returns for each object (None: nothing), so a page's documents are dropped
        before the next page is read (the peak memory of a start is one page, not all)."""
        listing = Listing(group, version, plural)
        kind = kind_of(group, plural)
        api_version = f"{group}/{version}" if group else version
        path, selector = _scoped(group, version, plural, scope)
        query: dict[str, Any] = {"limit": PAGE, **selector}
        while True:
            response = self._get(path, query, timeout=(5, 120))
            data = response.read()
            if response.status == 404:
                listing.found = False
                return listing
            if response.status == 403:  # as kopf does: the kind is skipped, the rest served
                log.warning("listing %s: forbidden (RBAC); its objects are not read", plural)
                listing.found = False
                return listing
            if response.status != 200:
                raise RuntimeError(f"listing {plural}: {response.status} {data[:200]!r}")
            body = json.loads(data)
            del data
            meta = body.get("metadata") or {}
            items = body.pop("items", None) or []
            items.reverse()
            while items:
                item = items.pop()
                item["kind"] = kind
                item["apiVersion"] = api_version
                if convert is None:
                    listing.items.append(item)
                    continue
                converted = convert(item)
                if converted is not None:
                    listing.items.append(converted)
            listing.resource_version = meta.get("resourceVersion")
            token = meta.get("continue")
            if not token:
                return listing
            query = {"limit": PAGE, "continue": token, **selector}

    def watch(
        self,
        group: str,
        version: str,
        plural: str,
        resource_version: str,
        timeout: int,
        scope: Scope | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The events after ``resource_version`` until the server ends the watch (``timeout``
        seconds); raises ``Gone`` when that version is too old."""
        path, selector = _scoped(group, version, plural, scope)
        query = {
            **selector,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        response = self._get(path, query, timeout=(5, timeout + 30))
        raw = response.response
        try:
            if response.status == 410:
                raise Gone(plural)
            if response.status != 200:
                raise RuntimeError(f"watching {plural}: {response.status} {raw.data[:200]!r}")
            pending = b""
            for chunk in raw.stream(65536, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


def list_all(
    api: KubeApi,
    kinds: Iterable[tuple[str, str, str]],
    convert: Callable[[tuple[str, str, str], dict[str, Any]], Any] | None = None,
    workers: int = 4,
) -> list[Listing]:
    """Every kind listed once (a few at a time: the apiserver encodes while we decode),
    each object through ``convert`` (given the kind) if given."""
    kinds = list(kinds)

    def one(kind: tuple[str, str, str]) -> Listing:
        each = None if convert is None else (lambda item: convert(kind, item))
        return api.list(*kind, convert=each)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list") as pool:
        return list(pool.map(one, kinds))


class PlainWatch(threading.Thread):
    """One kind followed from a listing's resourceVersion, each event fed like kopf's."""

    def __init__(
        self,
        api: KubeApi,
        listing: Listing,
        feed: EventFeed,
        submit: Callable[[Update], None],
        keys: Iterable[ResourceKey] = (),
        timeout: int = 120,
        scope: Scope | None = None,
    ) -> None:
        super().__init__(name=f"watch-{listing.plural}", daemon=True)
        self.api = api
        self.group, self.version, self.plural = listing.group, listing.version, listing.plural
        self.resource_version = listing.resource_version
        self.found = listing.found
        self.feed = feed
        self.submit = submit
        self.keys: set[ResourceKey] = set(keys)  # what the store holds of this kind
        self.timeout = timeout
        self.scope = scope
        self.stopping = threading.Event()
        self.relists = 0

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                if not self.found or self.resource_version is None:
                    self._relist()
                    if not self.found:
                        self.stopping.wait(30.0)  # no such kind (yet): look again later
                        continue
                assert self.resource_version is not None
                for event in self.api.watch(
                    self.group,
                    self.version,
                    self.plural,
                    self.resource_version,
                    self._cycle(),
                    scope=self.scope,
                ):
                    if self.stopping.is_set():
                        return
                    self._on(event)
                # The server ended the watch on time: the stream was alive and in step.
                self.feed.alive(self.plural, None)
                backoff = 0.5
            except Gone:
                log.info("watch of %s: resourceVersion too old, listing again", self.plural)
                self.resource_version = None
            except Exception as exc:
                if self.stopping.is_set():
                    return
                log.warning("watch of %s failed (%s); again in %.1f s", self.plural, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _cycle(self) -> int:
        """Seconds the server keeps one watch open: ``timeout``, and under a third of the
        watch-liveness stall limit, so that a quiet kind's watch, ended on time by the server,
        proves itself alive before the limit (bookmarks may come less often)."""
        liveness = self.feed.liveness
        if liveness is None:
            return self.timeout
        return max(1, min(self.timeout, int(liveness.stall_after / 3)))

    def _on(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        meta = obj.get("metadata") or {}
        if kind == "BOOKMARK":
            self.resource_version = meta.get("resourceVersion") or self.resource_version
            self.feed.alive(self.plural, self.resource_version)
            return
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(self.plural)
            raise RuntimeError(f"watch error: {obj.get('message')}")
        self.resource_version = meta.get("resourceVersion") or self.resource_version
        obj.setdefault("kind", kind_of(self.group, self.plural))
        obj.setdefault("apiVersion", f"{self.group}/{self.version}" if self.group else self.version)
        update = self.feed(kind, obj, self.plural)
        if update is not None:
            if update.delete:
                self.keys.discard(update.key)
            else:
                self.keys.add(update.key)

    def _relist(self) -> None:
        """List again; what the store holds and the listing lacks was deleted meanwhile."""
        listing = self.api.list(self.group, self.version, self.plural, scope=self.scope)
        self.found = listing.found
        self.relists += 1
        present: set[ResourceKey] = set()
        for item in listing.items:
            update = self.feed(None, item, self.plural)
            if update is not None:
                present.add(update.key)
        for key in self.keys - present:
            log.info("%s was deleted while the watch was down", key)
            self.submit(Update(key, delete=True))
        self.keys = present
        self.resource_version = listing.resource_version
        self.feed.alive(self.plural, self.resource_version)

    def stop(self) -> None:
        self.stopping.set()


def is_plain(group: str, plural: str) -> bool:
    return (group, plural) in PLAIN_WATCHED


def kinds_for_kopf() -> tuple[tuple[str, str, str], ...]:
    """The watched kinds kopf still follows."""
    return tuple(k for k in WATCHED if not is_plain(k[0], k[2]))


def wait_all(watches: Iterable[PlainWatch], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for watch in watches:
        watch.join(max(0.0, deadline - time.monotonic()))
