"""Per-connection, per-type delivery state: what was asked for, sent, ACKed and NACKed.

``sent_view`` is the map of resources the proxy was last brought up to. It is usually a
map shared with every other proxy of the same shape, so a thousand proxies in sync cost one
map, not a thousand. Delta streams keep the few per-proxy exceptions (a NACKed resource,
a version declared on reconnect) in ``overrides``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Every new TypeState starts from the one empty view (NOTHING): diffs from it are computed
# once and shared, not once per proxy.
from controlplane.cache.interface import (
    NOTHING,
    SHORT_NAMES,
    WILDCARD_TYPES,
    CompiledResource,
)


@dataclass
class Nack:
    version: str
    nonce: str
    message: str
    at: float
    resource_names: tuple[str, ...] = ()


@dataclass
class PushError:
    """The control plane could not build this proxy's next response: it keeps what it has
    and is not being updated until a later change compiles."""

    message: str
    at: float


@dataclass
class Pending:
    """A response not yet ACKed: its version, and (Delta) what it carried and what the proxy
    had before it, by reference to shared views rather than per-proxy copies."""

    version: str
    change_seen_at: float  # 0 for a response that no configuration change caused
    names: tuple[str, ...] = ()
    view: Mapping[str, CompiledResource] = field(default_factory=lambda: NOTHING)
    before_view: Mapping[str, CompiledResource] = field(default_factory=lambda: NOTHING)
    before_overrides: Mapping[str, str | None] = field(default_factory=dict)

    def prior(self, name: str) -> str | None:
        """The version of ``name`` the proxy had before this response."""
        if name in self.before_overrides:
            return self.before_overrides[name]
        resource = self.before_view.get(name)
        return resource.version if resource is not None else None


@dataclass
class TypeState:
    """Delivery state of one resource type on one stream."""

    type_url: str
    subscribed: bool = False  # the proxy asked for this type on this stream
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    sent_view: Mapping[str, CompiledResource] = field(default_factory=lambda: NOTHING)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    acked_version: str = ""
    acked_at: float = 0.0
    nack: Nack | None = None
    push_error: PushError | None = None  # the last push could not be built
    force: bool = False  # send the whole view even if nothing changed
    force_names: set[str] = field(default_factory=set)  # send these even if unchanged
    change_seen_at: float = 0.0  # when the change behind the last send was seen
    # Delta only: name -> the version the proxy has, where it differs from sent_view
    # (None: it has none); name -> a version it rejected (never re-sent).
    overrides: dict[str, str | None] = field(default_factory=dict)
    nacked: dict[str, str] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)  # nonce -> response
    # Delta: the map, names and wildcard flag the sent view was last brought up to date
    # from (compared by identity: the cache's maps are immutable and shared).
    sent_from: tuple[object, frozenset[str], bool] | None = None
    # VHDS only: the route configurations whose namespace was answered (see delta.py).
    namespaces: frozenset[str] = frozenset()

    @property
    def sent_resources(self) -> Mapping[str, CompiledResource]:
        return self.sent_view

    def subscribe(self, names: Iterable[str], initial: bool) -> bool:
        """SotW: record the names in a request; return True if the interest changed."""
        names = frozenset(sys.intern(n) for n in names)
        wildcard = self.type_url in WILDCARD_TYPES and (not names or "*" in names)
        if initial and not self.subscribed:
            self.subscribed = True
            self.wildcard, self.names = wildcard, names
            return True
        if wildcard != self.wildcard or names != self.names:
            self.wildcard, self.names = wildcard, names
            return True
        return False

    def client_version(self, name: str) -> str | None:
        """The version of ``name`` the proxy holds, as far as the server knows."""
        if name in self.overrides:
            return self.overrides[name]
        resource = self.sent_view.get(name)
        return resource.version if resource is not None else None

    @property
    def synced(self) -> str:
        if self.push_error is not None:
            # Never SYNCED while updates cannot be built, whatever the proxy ACKed before.
            return "ERROR"
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
            "resources": len(self.sent_view),
        }
        if not self.wildcard:
            out["subscribed"] = len(self.names)
        if self.nack is not None:
            out["nack"] = {
                "version": self.nack.version,
                "message": self.nack.message,
                "at": self.nack.at,
                "resources": list(self.nack.resource_names),
            }
        if self.push_error is not None:
            out["error"] = {"message": self.push_error.message, "at": self.push_error.at}
        return out


def short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit("/", 1)[-1])


def now() -> float:
    return time.time()
