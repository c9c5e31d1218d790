"""Which replica writes status: the kopf peering leader.

Every replica watches the cluster and serves xDS from its own store; only one of them should
write ``status`` and Events, or replicas would race each other's writes. Each replica runs a
second, handler-less kopf operator whose only job is kopf peering: it keeps this replica's
identity, priority and last-seen time in a ``ClusterKopfPeering`` object (and cleans up dead
peers). Priorities are unique per replica, so kopf's own rule picks exactly one: the live
peer with the highest priority runs, the others pause. ``Leadership`` applies the same rule
to the same object (seen through the always-running watch operator), so status writing
follows kopf's choice without reaching into kopf's internals.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def new_priority() -> int:
    """A priority unlikely to equal another replica's (kopf pauses all peers on a tie)."""
    return random.SystemRandom().randint(1, 2**31 - 1)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def leader_of(peering_status: Mapping[str, Any], now: datetime) -> str | None:
    """The identity of the live peer with the highest priority (ties: the smaller id)."""
    best: tuple[int, str] | None = None
    for identity, info in peering_status.items():
        if not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen"))
        lifetime = int(info.get("lifetime", 60))
        if seen is None or seen + timedelta(seconds=lifetime) <= now:
            continue  # dead: kopf treats it as gone
        candidate = (int(info.get("priority", 0)), identity)
        if (
            best is None
            or candidate[0] > best[0]
            or (candidate[0] == best[0] and identity < best[1])
        ):
            best = candidate
    return best[1] if best else None


class Leadership:
    """Whether this replica is the one that writes status (thread-safe)."""

    def __init__(self, identity: str, peering_name: str | None) -> None:
        self.identity = identity
        self.peering_name = peering_name  # None: no peering, this replica always leads
        self._status: Mapping[str, Any] = {}
        self._lock = threading.Lock()

    def observe(self, peering_object: Mapping[str, Any]) -> None:
        """Record the latest version of the peering object (from any thread)."""
        meta = peering_object.get("metadata") or {}
        if meta.get("name") != self.peering_name:
            return
        status = peering_object.get("status") or {}
        with self._lock:
            self._status = dict(status) if isinstance(status, Mapping) else {}

    def is_leader(self, now: datetime | None = None) -> bool:
        if self.peering_name is None:
            return True
        with self._lock:
            status = self._status
        return leader_of(status, now or datetime.now(UTC)) == self.identity
