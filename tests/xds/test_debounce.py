"""Bursts of store changes are debounced and coalesced into few publishes."""

from __future__ import annotations

import asyncio

from controlplane.cache import CompiledCache
from controlplane.store import Store
from tests.documents import submissions
from tests.xds.mesh import MESH, canary, ratings_pod


async def changes_for(seconds: float, every: float, make) -> int:  # type: ignore[no-untyped-def]
    count = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        make(count)
        count += 1
        await asyncio.sleep(every)
    return count


async def test_a_burst_is_published_once_after_the_quiet_period() -> None:
    store = Store()
    # A quiet period long against the 20 ms between changes and against a loaded machine's
    # scheduling delays, so that only the debouncer decides when the publish happens.
    hub = CompiledCache(store, debounce=0.4, max_delay=5.0)
    hub.start()
    try:
        store.apply(upserts=submissions(MESH))
        await asyncio.sleep(0.8)
        published = hub.metrics.publishes.value()
        sent = await changes_for(
            0.5, 0.02, lambda i: store.apply(upserts=submissions(canary(i % 90 + 1, 99 - i % 90)))
        )
        await asyncio.sleep(0.05)
        assert hub.metrics.publishes.value() == published  # still quiet-waiting
        deadline = asyncio.get_running_loop().time() + 3.0
        while hub.metrics.publishes.value() == published:
            assert asyncio.get_running_loop().time() < deadline, "never published"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # nothing more comes
        assert hub.metrics.publishes.value() == published + 1
        assert hub.metrics.store_changes.value() >= sent
        assert hub.compiler.snapshot is store.snapshot  # the last change of the burst won
        assert hub.last_publish["changed_keys"] == 1  # one VirtualService, coalesced
    finally:
        await hub.stop()


async def test_continuous_changes_are_published_at_the_maximum_delay() -> None:
    store = Store()
    hub = CompiledCache(store, debounce=0.1, max_delay=0.3, endpoint_max_delay=0.3)
    hub.start()
    try:
        store.apply(upserts=submissions(MESH))
        await asyncio.sleep(0.3)
        before = hub.metrics.publishes.value()
        await changes_for(
            1.25, 0.02, lambda i: store.apply(upserts=submissions(canary(i % 90 + 1, 99 - i % 90)))
        )
        published = hub.metrics.publishes.value() - before
        assert 3 <= published <= 5  # every 0.3 s although the burst never went quiet
    finally:
        await hub.stop()


async def test_endpoint_changes_alone_wait_at_most_the_endpoint_delay() -> None:
    store = Store()
    hub = CompiledCache(store, debounce=0.1, max_delay=10.0, endpoint_max_delay=0.25)
    hub.start()
    try:
        store.apply(upserts=submissions(MESH))
        await asyncio.sleep(0.3)
        before = hub.metrics.publishes.value()
        await changes_for(
            1.1,
            0.02,
            lambda i: store.apply(
                upserts=submissions(ratings_pod("ratings-2", f"127.0.6.{i % 200 + 10}"))
            ),
        )
        assert hub.metrics.publishes.value() - before >= 3  # not held for 10 s
    finally:
        await hub.stop()
