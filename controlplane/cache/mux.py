"""Routing by type URL: one ``ConfigCache`` (``interface.py``) made of several, each serving
some types (secrets from ``secrets.SecretCache``, the rest from ``compiled.CompiledCache``).

A mux watch opens a watch on a sub-cache only when the stream first asks for one of that
cache's types, so a proxy that never subscribes to secrets is never woken by a rotation,
and a proxy that holds only secrets is never woken by a publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controlplane.cache.interface import PUSH_ORDER, ConfigCache, ResourceMap, Wake, Watch
from controlplane.compile import ProxyResources
from controlplane.compile.proxy import Proxy


class CacheMux:
    """``default`` serves every type not named in ``by_type``."""

    def __init__(self, default: ConfigCache, by_type: Mapping[str, ConfigCache] | None = None):
        self.default = default
        self.by_type: dict[str, ConfigCache] = dict(by_type or {})

    def cache_for(self, type_url: str) -> ConfigCache:
        return self.by_type.get(type_url, self.default)

    @property
    def change_seen_at(self) -> float:
        return self.default.change_seen_at

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        return self.cache_for(type_url).fetch(proxy, type_url)

    def resources_for(self, proxy: Proxy) -> ProxyResources:
        """Every type ``proxy`` should have, from whichever cache serves it (for tests and
        debugging; streams watch)."""
        return ProxyResources({t: self.fetch(proxy, t) for t in PUSH_ORDER})

    def watch(self, proxy: Proxy, wake: Wake) -> _MuxWatch:
        return _MuxWatch(self, proxy, wake)

    def subscribe(self, listener: Callable[[], None]) -> None:
        for cache in {id(c): c for c in (self.default, *self.by_type.values())}.values():
            cache.subscribe(listener)


class _MuxWatch:
    __slots__ = ("_mux", "_watches", "proxy", "wake")

    def __init__(self, mux: CacheMux, proxy: Proxy, wake: Wake) -> None:
        self._mux = mux
        self.proxy = proxy
        self.wake = wake
        self._watches: dict[int, Watch] = {}  # id(cache) -> its watch for this proxy

    def resources(self, type_url: str) -> ResourceMap:
        cache = self._mux.cache_for(type_url)
        watch = self._watches.get(id(cache))
        if watch is None:
            watch = self._watches[id(cache)] = cache.watch(self.proxy, self.wake)
        return watch.resources(type_url)

    def cancel(self) -> None:
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
