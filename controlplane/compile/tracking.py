"""What a build read: the two recording mechanisms of compilation, in one place.

1. Snapshot reads. A ``TrackedSnapshot`` is the read-tracking view of a Snapshot that every
   generator reads through (``SnapshotCompiler.reads``). Each read reports its dependency
   token (``store/reads.py`` decides which) to a ``Tracker``, which files it under every
   build that is running. The memo (``compile/memo.py``) starts and stops a recording around
   each build and keeps the tokens with the value; a later compiler keeps the builds whose
   tokens a change did not touch (``store/dependencies.py``).
2. Proxy reads. ``recording_proxy`` gives a Proxy that remembers which of its fields the
   compiler read; the xDS cache groups proxies that agree on those fields into one shape.
   ``SHAPE_DERIVED`` names the fields whose whole effect is a value derived from them and the
   snapshot, so proxies that differ in the field but agree on the value share a shape.

The Snapshot itself records nothing and is never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from controlplane.compile.inbound import inbound_ports
from controlplane.compile.proxy import Proxy
from controlplane.store.reads import ReportingView, SnapshotReader
from controlplane.store.snapshot import Snapshot
from controlplane.store.tokens import Token

__all__ = [
    "SHAPE_DERIVED",
    "Recorder",
    "TrackedSnapshot",
    "Tracker",
    "recording_proxy",
]


# ---- snapshot reads -----------------------------------------------------------------------


class Recorder:
    """The tokens read while a build runs.

    ``tokens`` is everything the build depended on: its own reads, its nested builds' tokens,
    and the inputs its caller read for it. A caller that reads an input and passes it into a
    build (rather than letting the build read it) makes that input a dependency of the
    build: ``reads`` keeps the build's *direct* reads in order (nested builds' reads stay
    out, so sibling builds do not depend on each other's inputs), and a new build of a
    family (its memo key's first element) is seeded with what was read directly since the
    previous build of the same family. So in ``rule = reads.destination_rule(...);
    other_build(...); cached(ClusterKey(...), build)`` the cluster build depends on the rule
    even though another build came in between.
    """

    __slots__ = ("tokens", "reads", "consumed")

    def __init__(self, seed: Iterable[Token] = ()) -> None:
        self.tokens: set[Token] = set(seed)
        self.reads: list[Token] = list(seed)
        self.consumed: dict[Hashable, int] = {}  # family -> len(reads) at its last build

    def inputs_for(self, family: Hashable) -> list[Token]:
        """The direct reads since the last build of ``family``; marks them consumed."""
        start = self.consumed.get(family, 0)
        self.consumed[family] = len(self.reads)
        return self.reads[start:]


class Tracker:
    """The stack of active recorders of one compiler (compilation is single-threaded).

    Outside any recording a top-level recorder keeps the direct reads, so that a top-level
    caller's reads still become dependencies of the builds it starts; ``forget`` ends that
    scope (e.g. before compiling for the next proxy). A *scope* (``push_scope``) is a
    recorder that only bounds seeding: the direct reads inside it seed the builds inside
    it, and its tokens are not kept (every enclosing recording gets them anyway).
    """

    __slots__ = ("stack", "collecting", "top")

    def __init__(self) -> None:
        self.stack: list[Recorder] = []
        self.collecting: list[Recorder] = []  # the recorders of ``stack`` that keep tokens
        self.top = Recorder()

    def read(self, *tokens: Token) -> None:
        stack = self.stack
        if not stack:
            self.top.reads.extend(tokens)
            return
        for recorder in self.collecting:
            recorder.tokens.update(tokens)
        stack[-1].reads.extend(tokens)

    def read_all(self, tokens: Iterable[Token]) -> None:
        """Tokens of a nested build (hit or miss) become the enclosing builds' tokens too."""
        for recorder in self.collecting:
            recorder.tokens.update(tokens)

    def consumed(self, family: Hashable) -> None:
        """A build of ``family`` was found in the memo: the caller's reads so far went to it
        (only the mark moves: no copy of the reads, this runs for every memo hit)."""
        caller = self.stack[-1] if self.stack else self.top
        caller.consumed[family] = len(caller.reads)

    def forget(self) -> None:
        """End the top-level scope (reads before this are no build's dependency)."""
        self.top = Recorder()

    def push(self, family: Hashable = None, seeded: bool = True) -> Recorder:
        """Start a build's recorder; ``seeded``: its caller's direct reads since the last
        build of ``family`` are its inputs too (False for a build that reads everything it
        uses from the snapshot itself, so its caller's reads stay the caller's)."""
        caller = self.stack[-1] if self.stack else self.top
        recorder = Recorder(caller.inputs_for(family) if seeded else ())
        self.stack.append(recorder)
        self.collecting.append(recorder)
        return recorder

    def push_scope(self) -> Recorder:
        """Start a scope: a recorder for seeding only (see the class docstring)."""
        recorder = Recorder()
        self.stack.append(recorder)
        return recorder

    def pop(self, recorder: Recorder) -> None:
        popped = self.stack.pop()
        assert popped is recorder, "recorders must nest"
        if self.collecting and self.collecting[-1] is recorder:
            self.collecting.pop()


class TrackedSnapshot(ReportingView):
    """The read-tracking view of one Snapshot: the accessors of the snapshot, each read filed
    under the builds that are running (see ``Tracker``). One per compiler."""

    __slots__ = ("tracker",)

    def __init__(self, snapshot: Snapshot) -> None:
        tracker = Tracker()
        super().__init__(snapshot, tracker.read)
        self.tracker = tracker

    def start_recording(self, family: Hashable = None, seeded: bool = True) -> Recorder:
        """Begin recording what a build of ``family`` reads, nested in any recording already
        active (see ``Recorder`` for what the caller's reads contribute)."""
        return self.tracker.push(family, seeded)

    def stop_recording(self, recorder: Recorder) -> None:
        self.tracker.pop(recorder)

    def start_scope(self) -> Recorder:
        """Begin a scope whose direct reads seed only the builds started inside it (one per
        generator: what one generator read is no input of another's builds)."""
        return self.tracker.push_scope()

    def reused(self, family: Hashable, tokens: Iterable[Token]) -> None:
        """A memoized build of ``family`` with dependencies ``tokens`` was reused."""
        self.tracker.consumed(family)
        self.tracker.read_all(tokens)

    def depends_on(self, tokens: Iterable[Token]) -> None:
        """Count ``tokens`` (a nested build's) as read by every active recording."""
        self.tracker.read_all(tokens)

    def forget_reads(self) -> None:
        """Reads made outside any recording so far are no later build's dependency."""
        self.tracker.forget()


# ---- proxy reads --------------------------------------------------------------------------

_PROXY_FIELDS = frozenset(f.name for f in dataclasses.fields(Proxy))

# Proxy fields whose whole effect on compilation is a value derived from them and the
# snapshot: two proxies that differ in such a field but agree on the derived value compile
# alike (a thousand sidecars at a thousand addresses that no Service selects get one shape).
SHAPE_DERIVED: Mapping[str, Callable[[SnapshotReader, Proxy], Hashable]] = {
    "ips": inbound_ports,  # read only to find the ports the workload serves
}


class _RecordingProxy(Proxy):
    """A Proxy that remembers which of its fields were read."""

    def __getattribute__(self, name: str) -> Any:
        if name in _PROXY_FIELDS:
            object.__getattribute__(self, "_reads").add(name)
        return object.__getattribute__(self, name)


def recording_proxy(proxy: Proxy) -> tuple[Proxy, set[str]]:
    """A copy of ``proxy`` and the set that collects the names of the fields read on it."""
    values = {f.name: getattr(proxy, f.name) for f in dataclasses.fields(proxy)}
    tracked = _RecordingProxy(**values)
    reads: set[str] = set()
    object.__setattr__(tracked, "_reads", reads)
    return tracked, reads
