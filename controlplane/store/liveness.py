"""Whether each watch the sources run is still alive (kopf operators are known to go quiet:
a watch stream that hangs without an error delivers nothing, forever).

A watch is *alive* while it has delivered an event, or a check proved it in step with the
source, within ``stall_after`` seconds. The check (``listed``) is a listing of the kind: when
no listed object is newer than the newest object the watch delivered, the watch has missed
nothing and a quiet kind is simply quiet; when the listing holds something newer, the watch
is behind, and stays un-refreshed until an event arrives. A watch neither refreshed nor fed
for ``stall_after`` is *stalled*: the liveness probe (``/healthz``) fails, so the kubelet
restarts the process, and the stall is logged and exported per kind.

File mode's directory watcher is one watch (kind ``files``): every pass of its loop, event or
periodic rescan, refreshes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

DEFAULT_STALL_AFTER = 300.0  # seconds: five minutes, well above kopf's 120 s watch cycle


class WatchLiveness:
    """Thread-safe: fed from the kopf thread, read by the debug port."""

    def __init__(
        self,
        stall_after: float = DEFAULT_STALL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_after <= 0:
            raise ValueError(f"stall_after must be positive, not {stall_after}")
        self.stall_after = stall_after
        self.clock = clock
        self._lock = threading.Lock()
        self._refreshed: dict[str, float] = {}  # kind -> last event or in-step listing
        self._newest: dict[str, int] = {}  # kind -> newest resourceVersion delivered
        self._behind: dict[str, int] = {}  # kind -> newest version a listing had, if ahead

    def watching(self, kinds: Iterable[str]) -> None:
        """Start the clock for ``kinds`` (a watch that never delivers anything stalls too)."""
        now = self.clock()
        with self._lock:
            for kind in kinds:
                self._refreshed.setdefault(kind, now)

    def event(self, kind: str, version: str | int | None = None) -> None:
        """The watch of ``kind`` delivered an object (``version``: its resourceVersion)."""
        number = _version(version)
        with self._lock:
            self._refreshed[kind] = self.clock()
            if number is not None and number > self._newest.get(kind, 0):
                self._newest[kind] = number
            if self._behind.get(kind, 0) <= self._newest.get(kind, 0):
                self._behind.pop(kind, None)

    def listed(self, kind: str, newest: str | int | None) -> bool:
        """A listing of ``kind`` succeeded, its newest object at ``newest`` (None: the kind
        is empty). Returns whether the watch is in step (and so refreshed)."""
        number = _version(newest)
        with self._lock:
            if number is not None and number > self._newest.get(kind, 0):
                self._behind[kind] = number
                self._refreshed.setdefault(kind, self.clock())
                return False
            self._behind.pop(kind, None)
            self._refreshed[kind] = self.clock()
            return True

    def ages(self) -> dict[str, float]:
        """Seconds since each watch was last refreshed (an event or an in-step listing)."""
        now = self.clock()
        with self._lock:
            return {kind: max(0.0, now - at) for kind, at in self._refreshed.items()}

    def stalled(self) -> dict[str, str]:
        """The stalled watches, each with why."""
        out = {}
        behind = dict(self._behind)
        for kind, age in sorted(self.ages().items()):
            if age <= self.stall_after:
                continue
            why = f"no event and no in-step listing for {age:.0f}s (limit {self.stall_after:g}s)"
            if kind in behind:
                why += f"; the apiserver holds resourceVersion {behind[kind]}, the watch "
                why += f"delivered up to {self._newest.get(kind, 0)}"
            out[kind] = why
        return out


def _version(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None  # resourceVersions are opaque; the apiserver's are integers
