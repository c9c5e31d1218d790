"""`controlplane wait` decides from the Programmed verdict: done at the share asked for, failed
at once on a refusal or a NACK, never on a verdict about an older file."""

from __future__ import annotations

import time

import pytest

from controlplane.cli.wait import Reading, Target, WaitFailed, done, wait

T = Target("VirtualService", "default", "reviews")


def pending(left: int, total: int = 10) -> Reading:
    return Reading(
        False, "Pending", f"{left} of {total} proxies still on generation 1", 2, total, left
    )


def test_a_share_is_enough_when_asked_for() -> None:
    assert not done(pending(2), 1.0)
    assert done(pending(1), 0.9) and not done(pending(2), 0.9)


def test_a_verdict_about_an_older_file_does_not_count() -> None:
    stale = Reading(True, "Programmed", "10 of 10 proxies on generation 1", 1, 10, 0, fresh=False)
    assert not done(stale, 1.0)


def test_a_refusal_fails_at_once_with_the_reason() -> None:
    refused = Reading(False, "NotAccepted", "spec.http[0].route[1].weight: must not be negative",
                      2, 0, 0)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(WaitFailed, match="NotAccepted: spec.http\\[0\\].route\\[1\\].weight"):
        wait([T], lambda _: refused, 1.0, timeout=10)
    assert time.monotonic() - started < 1


def test_it_returns_once_the_last_proxy_acked() -> None:
    readings = iter([pending(3), pending(1),
                     Reading(True, "Programmed", "10 of 10 proxies on generation 2", 2, 10, 0)])  # fmt: skip
    seen = wait([T], lambda _: next(readings), 1.0, timeout=5, poll=0.01)
    assert seen[T].programmed


def test_a_timeout_says_where_it_stands() -> None:
    with pytest.raises(WaitFailed, match="timed out after 0.2s: .*3 of 10 proxies"):
        wait([T], lambda _: pending(3), 1.0, timeout=0.2, poll=0.05)
