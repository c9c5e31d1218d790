"""The debouncer alone, with a recording publish function: bursts coalesce, quiet periods and
deadlines hold, endpoint-only bursts wait less, and a flush publishes at once."""

from __future__ import annotations

import asyncio

from controlplane.api.issues import ResourceKey
from controlplane.cache.debounce import Debouncer
from controlplane.store import Snapshot, Store

VS = ResourceKey("VirtualService", "default", "reviews")
POD = ResourceKey("Pod", "default", "reviews-v1")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Snapshot, float, set[ResourceKey]]] = []

    def __call__(self, snapshot: Snapshot, seen_at: float, keys: set[ResourceKey]) -> None:
        self.calls.append((snapshot, seen_at, keys))


async def test_a_burst_is_published_once_with_the_newest_snapshot_and_every_key() -> None:
    published = Recorder()
    debouncer = Debouncer(published, debounce=0.05, max_delay=5.0)
    debouncer.start()
    first, last = Store().snapshot, Store().snapshot
    try:
        debouncer.add(first, {VS}, seen_at=100.0)
        await asyncio.sleep(0.02)
        debouncer.add(last, {POD}, seen_at=200.0)
        assert published.calls == []
        await asyncio.sleep(0.2)
        assert published.calls == [(last, 100.0, {VS, POD})]
    finally:
        await debouncer.stop()
    assert not debouncer.running


async def test_changes_that_never_go_quiet_are_published_by_the_deadline() -> None:
    published = Recorder()
    debouncer = Debouncer(published, debounce=0.1, max_delay=0.25)
    debouncer.start()
    try:
        for _ in range(12):
            debouncer.add(Store().snapshot, {VS}, seen_at=0.0)
            await asyncio.sleep(0.05)
        assert len(published.calls) >= 1
    finally:
        await debouncer.stop()


async def test_an_endpoint_only_burst_waits_at_most_the_endpoint_delay() -> None:
    debouncer = Debouncer(Recorder(), debounce=0.1, max_delay=10.0, endpoint_max_delay=0.3)
    debouncer.add(Store().snapshot, {POD}, seen_at=0.0)
    assert debouncer.deadline() - debouncer._pending_first <= 0.3 + 1e-9
    debouncer.add(Store().snapshot, {VS}, seen_at=0.0)  # not endpoints alone any more
    debouncer.add(Store().snapshot, {VS}, seen_at=0.0)
    assert debouncer.deadline() == debouncer._pending_last + 0.1


def test_flush_publishes_the_pending_burst_at_once_and_only_once() -> None:
    published = Recorder()
    debouncer = Debouncer(published)
    snapshot = Store().snapshot
    debouncer.add(snapshot, {VS}, seen_at=1.0)
    debouncer.flush()
    debouncer.flush()
    assert published.calls == [(snapshot, 1.0, {VS})]
