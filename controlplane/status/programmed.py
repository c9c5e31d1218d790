"""The ``Programmed`` verdict: has every proxy a resource affects ACKed its current generation?

Closes the loop from a resource to the proxies: the store says what a resource is (its
generation, accepted or not), the compiled cache says which proxies it affects (a proxy's
shape records the dependency tokens its compile read; a resource affects the shapes whose
tokens its own change would touch, ``store/dependencies.py``), and the xDS side says how far
each proxy has got (``xds/progress.py``, reached through the ``ProgressSource`` callable so
that this module knows nothing of streams).

A resource is Programmed at generation G when the cache serves a snapshot that includes G
and every affected proxy has ACKed, for every type, exactly what the cache answers it now.
While a push is in flight it is not (``3 of 1,000 proxies still on generation 6``); when a
proxy NACKed something this resource produced it is not either, with Envoy's message and the
proxy. A NACK is attributed through the compiler's memo: the NACKed Envoy resources' builds
recorded the tokens they read; the resources whose tokens meet them and that changed after
the proxy was last seen current are the ones Envoy refused (the others go on; the proxy keeps
its last ACKed config, as Envoy does).

``ProgrammedTracker`` evaluates on the event loop, at most every ``interval`` seconds and
only after a publish, an ACK, a NACK or a store change; listeners (the status writer, the
debug endpoint) read ``verdicts``. Evaluating never pushes and never writes the store.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.api.crds import KINDS
from controlplane.api.issues import ResourceKey
from controlplane.cache.compiled import CompiledCache
from controlplane.compile import CompiledResource
from controlplane.status.verdict import PROGRAMMED, Programmed, Rejection
from controlplane.store import ChangeSet, ResourceStatus, Snapshot, Store
from controlplane.store.dependencies import change_tokens
from controlplane.store.tokens import Token, kind_token

log = logging.getLogger("controlplane.status")

TRACKED_KINDS = frozenset(k.kind for k in KINDS)
_MAX_HISTORY = 8  # generations remembered per resource (to say which one a proxy still runs)


class NackLike(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def resource_names(self) -> tuple[str, ...]: ...


class ProgressLike(Protocol):
    """One connected proxy as ``xds/progress.py`` reports it."""

    @property
    def stream(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def proxy(self) -> Any: ...
    @property
    def current(self) -> bool: ...
    @property
    def nacks(self) -> Sequence[NackLike]: ...


ProgressSource = Callable[[], Sequence[ProgressLike]]


def _count(n: int) -> str:
    return f"{n:,}"


def resource_tokens(snapshot: Snapshot, key: ResourceKey) -> frozenset[Token]:
    """What a change of ``key`` would touch, less the read of its whole kind: a proxy whose
    compile read these depends on this resource (reading every VirtualService to find the
    ones of one host is no dependency on the others)."""
    return change_tokens(snapshot, snapshot, [key]) - {kind_token(key.kind)}


def _compiled_in(value: Any, depth: int = 0) -> Iterable[CompiledResource]:
    """The compiled resources a memoized value holds (a resource, or a few levels of
    tuples, lists and dicts of them)."""
    if isinstance(value, CompiledResource):
        yield value
    elif depth < 3 and isinstance(value, tuple | list):
        for item in value:
            yield from _compiled_in(item, depth + 1)
    elif depth < 3 and isinstance(value, Mapping):
        for item in value.values():
            yield from _compiled_in(item, depth + 1)


def named_in(message: str, names: Iterable[str]) -> set[str]:
    """The resource names Envoy's message mentions (SotW NACKs name no resource otherwise)."""
    return {n for n in names if n and n in message}


@dataclass
class _History:
    revision: int = 0  # counts changes, for sources that set no generation (file mode)
    seen_at: float = 0.0  # when the store took the latest change (0: before we started)
    changes: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_MAX_HISTORY))

    def since(self) -> int:
        """The snapshot version that brought the current generation (0: from the start)."""
        return self.changes[-1][0] if self.changes else 0

    def generation_at(self, version: int) -> int | None:
        """The generation a proxy current at snapshot ``version`` runs (None: unknown)."""
        found = None
        for since, generation in self.changes:
            if since <= version:
                found = generation
        return found


@dataclass(frozen=True)
class _Group:
    """Connected proxies of one shape: its tokens, how many, and the snapshot versions each
    was last seen current at, sorted (-1: not yet)."""

    tokens: frozenset[Token]
    size: int
    throughs: list[int]


@dataclass(frozen=True)
class _NackTrace:
    proxy: ProgressLike
    nack: NackLike
    names: tuple[str, ...]
    produced: frozenset[Token]  # what the builds of the NACKed resources read


class ProgrammedTracker:
    """Follows the store, the cache and the proxies; keeps ``verdicts`` current (see the
    module docstring). ``listeners`` are called with the keys whose verdict changed."""

    def __init__(
        self,
        store: Store,
        cache: CompiledCache,
        progress: ProgressSource,
        *,
        interval: float = 0.1,
    ) -> None:
        self.store = store
        self.cache = cache
        self.progress = progress
        self.interval = interval
        self.verdicts: dict[ResourceKey, Programmed] = {}
        self.listeners: list[Callable[[set[ResourceKey]], None]] = []
        self.evaluations = 0
        self.evaluation_seconds = 0.0
        self.attributed: dict[str, int] = {}  # kind -> NACKs attributed (a metric)
        self._history: dict[ResourceKey, _History] = {}
        self._changes: deque[tuple[int, float, frozenset[ResourceKey]]] = deque()
        self._through: dict[str, int] = {}  # stream -> snapshot version it was last current at
        self._shapes: dict[str, tuple[int, frozenset[Token]]] = {}  # stream -> its shape's tokens
        self._tokens: dict[ResourceKey, frozenset[Token]] = {}  # of the snapshot below
        self._tokens_version = -1
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Resources already there count as the first revision of their own.
        for key, status in store.snapshot.status.items():
            if key.kind in TRACKED_KINDS:
                history = self._history[key] = _History(revision=1)
                history.changes.append((0, self._generation(key, status, history)))
        store.subscribe(self._on_store_change)
        cache.subscribe(self.poke)

    # ---- events -----------------------------------------------------------------------------

    def _on_store_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        """Called by the store, possibly on another thread (the Kubernetes watcher)."""
        keys = frozenset(
            k for k in change.changed | change.status_changed if k.kind in TRACKED_KINDS
        )
        if not keys:
            return
        with self._lock:
            self._changes.append(
                (snapshot.version, change.at, frozenset(k for k in change.changed if k in keys))
            )
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.poke)

    def poke(self) -> None:
        """Something moved (a publish, an ACK, a NACK): evaluate soon."""
        self._wake.set()

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="programmed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.evaluate()
            except Exception:  # never let the verdicts stop the control plane
                log.exception("evaluating the Programmed condition failed")
            await asyncio.sleep(self.interval)

    # ---- the verdicts -----------------------------------------------------------------------

    def _absorb_changes(self, snapshot: Snapshot) -> None:
        with self._lock:
            changes = list(self._changes)
            self._changes.clear()
        for version, at, keys in changes:
            for key in keys:
                history = self._history.setdefault(key, _History())
                history.revision += 1
                history.seen_at = at
                status = snapshot.status.get(key)
                generation = self._generation(key, status, history)
                if not history.changes or history.changes[-1][1] != generation:
                    history.changes.append((version, generation))

    def _generation(
        self, key: ResourceKey, status: ResourceStatus | None, history: _History | None
    ) -> int:
        if status is not None and status.generation is not None:
            return status.generation
        return max(1, history.revision if history is not None else 1)

    def evaluate(self) -> set[ResourceKey]:
        """Recompute every verdict; returns (and tells the listeners) the keys that moved.

        Costs one pass over the proxies (grouped by shape: one token set, one sorted list of
        the snapshot versions its proxies were last seen current at) and one pass over the
        resources, each a set test and a bisection per shape, not a loop over proxies."""
        started = time.thread_time()
        snapshot = self.store.snapshot
        self._absorb_changes(snapshot)
        served = self.cache.snapshot.version
        if snapshot.version != self._tokens_version:
            self._tokens, self._tokens_version = {}, snapshot.version
            # Forget deleted resources (a resource created again starts a new history).
            self._history = {k: h for k, h in self._history.items() if k in snapshot.status}
        proxies = list(self.progress())
        members: dict[int, tuple[frozenset[Token], list[ProgressLike]]] = {}
        for p in proxies:
            if p.current:
                self._through[p.stream] = served
            tokens = self._shape_tokens(p)
            members.setdefault(id(tokens), (tokens, []))[1].append(p)
        live = {p.stream for p in proxies}
        self._through = {s: v for s, v in self._through.items() if s in live}
        self._shapes = {s: v for s, v in self._shapes.items() if s in live}
        groups = [
            _Group(tokens, len(ps), sorted(self._through.get(p.stream, -1) for p in ps))
            for tokens, ps in members.values()
        ]
        nacks = self._nacks([p for p in proxies if p.nacks])
        verdicts: dict[ResourceKey, Programmed] = {}
        for key, status in snapshot.status.items():
            if key.kind not in TRACKED_KINDS:
                continue
            history = self._history.get(key)
            verdict = self._verdict(snapshot, key, status, history, groups, nacks)
            if history is not None and history.seen_at:
                verdict = dataclasses.replace(verdict, seen_at=history.seen_at)
            verdicts[key] = verdict
        moved = {k for k, v in verdicts.items() if not v.same(self.verdicts.get(k))}
        for k in moved:
            if verdicts[k].rejections:
                self.attributed[k.kind] = self.attributed.get(k.kind, 0) + 1
                # The same words as the condition and the Event, naming the resource.
                log.error("%s (generation %d): %s", k, verdicts[k].generation, verdicts[k].message)
        moved |= set(self.verdicts) - set(verdicts)
        self.verdicts = verdicts
        self.evaluations += 1
        self.evaluation_seconds += time.thread_time() - started
        if moved:
            for listener in self.listeners:
                listener(moved)
        return moved

    def _shape_tokens(self, p: ProgressLike) -> frozenset[Token]:
        """What ``p``'s compile read (its shape's tokens), looked up once per generation of
        shapes."""
        generation = id(self.cache.shapes)
        found = self._shapes.get(p.stream)
        if found is not None and found[0] == generation:
            return found[1]
        try:
            tokens = self.cache.shape_for(p.proxy).dependencies
        except Exception:  # the push reports compile failures; this proxy waits
            tokens = frozenset()
        self._shapes[p.stream] = (generation, tokens)
        return tokens

    def _nacks(self, nacked: list[ProgressLike]) -> list[_NackTrace]:
        """Each current NACK with the tokens its Envoy resources' builds read (the memo is
        scanned once, for the names NACKed)."""
        if not nacked:
            return []
        wanted: list[tuple[ProgressLike, NackLike, set[str]]] = []
        for p in nacked:
            for nack in p.nacks:
                names = named_in(nack.message, nack.resource_names) or set(nack.resource_names)
                wanted.append((p, nack, names))
        every = set().union(*(names for _, _, names in wanted))
        by_name: dict[str, set[Token]] = {}
        for value, tokens in self.cache.compiler.memo.entries():
            for resource in _compiled_in(value):
                if resource.name in every:
                    by_name.setdefault(resource.name, set()).update(tokens)
        out = []
        for p, nack, names in wanted:
            produced: set[Token] = set()
            for name in names:
                produced |= by_name.get(name, set())
            out.append(_NackTrace(p, nack, tuple(sorted(names)), frozenset(produced)))
        return out

    def _resource_tokens(self, snapshot: Snapshot, key: ResourceKey) -> frozenset[Token]:
        found = self._tokens.get(key)
        if found is None:
            found = self._tokens[key] = resource_tokens(snapshot, key)
        return found

    def _verdict(
        self,
        snapshot: Snapshot,
        key: ResourceKey,
        status: ResourceStatus,
        history: _History | None,
        groups: list[_Group],
        nacks: list[_NackTrace],
    ) -> Programmed:
        generation = self._generation(key, status, history)
        if not status.accepted:
            return Programmed(
                generation,
                False,
                "NotAccepted",
                "the resource was rejected; proxies keep the last accepted version",
            )
        if not status.reconciled:
            return Programmed(
                generation,
                False,
                "NotReconciled",
                "the resource cannot be applied in context; proxies keep the last good version",
            )
        tokens = self._resource_tokens(snapshot, key)
        since = history.since() if history is not None else 0
        total = pending = 0
        oldest: int | None = None  # the oldest snapshot a pending proxy was seen current at
        for group in groups:
            if group.tokens.isdisjoint(tokens):
                continue
            total += group.size
            # Pending: not yet seen running a snapshot that includes this generation.
            behind = bisect.bisect_left(group.throughs, since)
            if behind:
                pending += behind
                first = group.throughs[0]
                oldest = first if oldest is None else min(oldest, first)
        rejections = tuple(
            Rejection(n.proxy.node_id, n.nack.type, n.names, n.nack.message)
            for n in nacks
            # Only a change after the proxy's last good state can have caused its NACK.
            if self._through.get(n.proxy.stream, -1) < since and not n.produced.isdisjoint(tokens)
        )
        if rejections:
            first_rejection = rejections[0]
            more = f" (and {len(rejections) - 1} more)" if len(rejections) > 1 else ""
            return Programmed(
                generation,
                False,
                "Rejected",
                f"proxy {first_rejection.proxy} rejected {first_rejection.type} "
                f"{', '.join(first_rejection.resource_names[:3])} built from this resource: "
                f"{first_rejection.message}{more}",
                total,
                pending,
                rejections,
            )
        if pending:
            older = None
            if history is not None and oldest is not None and oldest >= 0:
                older = history.generation_at(oldest)
            on = f"on generation {older}" if older is not None else "on an older generation"
            return Programmed(
                generation,
                False,
                "Pending",
                f"{_count(pending)} of {_count(total)} proxies still {on}",
                total,
                pending,
            )
        message = (
            f"{_count(total)} of {_count(total)} proxies on generation {generation}"
            if total
            else "no connected proxy is affected by this resource"
        )
        return Programmed(generation, True, PROGRAMMED, message, total, 0)

    # ---- reading --------------------------------------------------------------------------

    def find(self, kind: str, namespace: str, name: str) -> Programmed | None:
        return self.verdicts.get(ResourceKey(kind, namespace, name))

    def as_json(self) -> list[dict[str, Any]]:
        return [v.as_json(k) for k, v in sorted(self.verdicts.items(), key=lambda kv: str(kv[0]))]
