"""The line between what proxies should have and how it is delivered: the ``ConfigCache``
Protocol that the xDS server (``controlplane.xds``) asks, and the names it needs to ask.

A cache answers, for a proxy and a type URL, the resources that proxy should have now: a
map of name -> ``CompiledResource``, each carrying its own content version (the version of
a set of them is ``set_version``). A stream keeps one ``Watch`` per proxy; a cache calls the
watch's ``wake`` when what it answers for that proxy may have changed, and never otherwise,
so a change that does not concern a proxy costs its stream nothing. Implementations:
``compiled.CompiledCache`` (the compiler's output, shared by proxies of one shape),
``secrets.SecretCache`` (SDS certificates per identity), and ``mux.CacheMux``, which routes
each type URL to one of them.

Maps a cache returns are never mutated and are shared: the same object for every proxy
that should have the same resources, so a stream can tell "nothing changed" by identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

from controlplane.compile import CompiledResource, ProxyResources
from controlplane.compile.proxy import InvalidNode, Proxy, proxy_from_node
from controlplane.compile.resources import (
    BY_SHORT_NAME,
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    VIRTUAL_HOST,
    WILDCARD_TYPES,
)
from controlplane.compile.sds import redacted

__all__ = [
    "BY_SHORT_NAME",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "NOTHING",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "SHORT_NAMES",
    "VIRTUAL_HOST",
    "WILDCARD_TYPES",
    "CompiledResource",
    "ConfigCache",
    "InvalidNode",
    "Proxy",
    "ProxyResources",
    "ResourceMap",
    "Wake",
    "Watch",
    "proxy_from_node",
    "redacted",
    "set_version",
]

ResourceMap = Mapping[str, CompiledResource]
# Called by a cache when a watched proxy's resources may have changed; must be cheap and
# must not block (a stream sets a flag and its own task does the rest).
Wake = Callable[[], None]

# The one empty map: views and diffs from it are computed once and shared, not per proxy.
NOTHING: ResourceMap = MappingProxyType({})


class Watch(Protocol):
    """One proxy's standing interest in a cache, held by its stream while it is connected."""

    def resources(self, type_url: str) -> ResourceMap:
        """What the proxy should have of ``type_url`` now (all names; the stream selects)."""
        ...

    def cancel(self) -> None:
        """The stream is gone: wake it no more and forget the proxy."""
        ...


class ConfigCache(Protocol):
    """What the xDS server needs of a source of resources."""

    @property
    def change_seen_at(self) -> float:
        """Wall-clock time the change behind the newest resources was seen (for the
        convergence metric); 0.0 before any change."""
        ...

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        """What ``proxy`` should have of ``type_url`` now, without watching."""
        ...

    def watch(self, proxy: Proxy, wake: Wake) -> Watch:
        """Start watching for ``proxy``: ``wake`` is called whenever what the returned
        watch answers may have changed."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when a new generation of resources replaces the previous one
        (before any watch is woken): memos keyed by the old maps can then be dropped."""
        ...


def set_version(resources: Iterable[CompiledResource]) -> str:
    """The version of a set of resources: a hash of their names and versions."""
    digest = hashlib.blake2b(digest_size=8)
    for r in resources:
        digest.update(r.name.encode())
        digest.update(b"\0")
        digest.update(r.version.encode())
        digest.update(b"\n")
    return digest.hexdigest()
