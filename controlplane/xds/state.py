"""Per-connection, per-type delivery state: what was asked for, sent, ACKed and NACKed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.compile.resources import SHORT_NAMES, WILDCARD_TYPES, CompiledResource


@dataclass
class Nack:
    version: str
    nonce: str
    message: str
    at: float
    resource_names: tuple[str, ...] = ()


@dataclass
class TypeState:
    """Delivery state of one resource type on one stream."""

    type_url: str
    subscribed: bool = False  # the proxy asked for this type on this stream
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    sent_resources: dict[str, CompiledResource] = field(default_factory=dict)
    acked_version: str = ""
    acked_at: float = 0.0
    nack: Nack | None = None
    force: bool = False  # send again even if the version did not change
    change_seen_at: float = 0.0  # when the change behind the last send was seen

    def subscribe(self, names: Iterable[str], initial: bool) -> bool:
        """Record the names in a request; return True if the interest changed."""
        names = frozenset(names)
        wildcard = self.type_url in WILDCARD_TYPES and (not names or "*" in names)
        if initial and not self.subscribed:
            self.subscribed = True
            self.wildcard, self.names = wildcard, names
            return True
        if wildcard != self.wildcard or names != self.names:
            self.wildcard, self.names = wildcard, names
            return True
        return False

    def select(self, available: Mapping[str, CompiledResource]) -> list[CompiledResource]:
        """The resources of this type the proxy should have, in name order."""
        if self.wildcard:
            return [available[n] for n in sorted(available)]
        return [available[n] for n in sorted(self.names) if n in available]

    @property
    def synced(self) -> str:
        if not self.sent_version:
            return "NOT SENT"
        if self.nack is not None and self.nack.version == self.sent_version:
            return "NACKED"
        if self.acked_version == self.sent_version:
            return "SYNCED"
        return "STALE"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.synced,
            "sent_version": self.sent_version,
            "sent_at": self.sent_at,
            "acked_version": self.acked_version,
            "acked_at": self.acked_at,
            "resources": len(self.sent_resources),
        }
        if self.nack is not None:
            out["nack"] = {
                "version": self.nack.version,
                "message": self.nack.message,
                "at": self.nack.at,
            }
        return out


def set_version(resources: Iterable[CompiledResource]) -> str:
    """The version of a set of resources: a hash of their names and versions."""
    digest = hashlib.blake2b(digest_size=8)
    for r in resources:
        digest.update(r.name.encode())
        digest.update(b"\0")
        digest.update(r.version.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit("/", 1)[-1])


def now() -> float:
    return time.time()
