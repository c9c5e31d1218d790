"""The mux routes each type URL to one cache and opens a watch on a cache only when a stream
first asks for one of its types; cancelling the mux watch cancels each of those."""

from __future__ import annotations

from collections.abc import Callable

from controlplane.cache.interface import CLUSTER, NOTHING, SECRET, ResourceMap, Wake
from controlplane.cache.mux import CacheMux
from controlplane.compile import CompiledResource
from controlplane.compile.proxy import Proxy
from controlplane.compile.sds import root_secret

PROXY = Proxy(node_id="a", namespace="default")


class FakeCache:
    change_seen_at = 0.0

    def __init__(self, served: dict[str, ResourceMap]) -> None:
        self.served = served
        self.watches: list[FakeWatch] = []
        self.listeners: list[Callable[[], None]] = []

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        return self.served.get(type_url, NOTHING)

    def watch(self, proxy: Proxy, wake: Wake) -> FakeWatch:
        watch = FakeWatch(self, wake)
        self.watches.append(watch)
        return watch

    def subscribe(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)


class FakeWatch:
    def __init__(self, cache: FakeCache, wake: Wake) -> None:
        self.cache, self.wake, self.cancelled = cache, wake, False

    def resources(self, type_url: str) -> ResourceMap:
        return self.cache.fetch(PROXY, type_url)

    def cancel(self) -> None:
        self.cancelled = True


def test_types_are_served_by_their_cache_and_watches_open_on_first_use() -> None:
    root = {"ROOTCA": CompiledResource("ROOTCA", root_secret("PEM"))}
    compiled, secrets = FakeCache({}), FakeCache({SECRET: root})
    mux = CacheMux(compiled, {SECRET: secrets})
    assert mux.fetch(PROXY, SECRET) is root
    woken: list[int] = []
    watch = mux.watch(PROXY, lambda: woken.append(1))
    assert watch.resources(CLUSTER) is NOTHING
    assert len(compiled.watches) == 1 and secrets.watches == []
    assert watch.resources(SECRET) is root
    assert watch.resources(SECRET) is root
    assert len(secrets.watches) == 1
    secrets.watches[0].wake()
    assert woken == [1]
    watch.cancel()
    assert compiled.watches[0].cancelled and secrets.watches[0].cancelled


def test_a_listener_is_subscribed_once_to_each_distinct_cache() -> None:
    compiled = FakeCache({})
    mux = CacheMux(compiled, {CLUSTER: compiled})
    mux.subscribe(lambda: None)
    assert len(compiled.listeners) == 1
