"""Leadership follows kopf's peering rule: the live peer with the highest priority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.status.leader import Leadership, leader_of

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 60) -> dict:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


def test_the_live_peer_with_the_highest_priority_leads():
    status = {"a": peer(10, 1), "b": peer(30, 1), "c": peer(20, 1)}
    assert leader_of(status, NOW) == "b"


def test_a_dead_peer_does_not_lead_and_nobody_leads_an_empty_peering():
    status = {"a": peer(10, 1), "b": peer(30, 120)}
    assert leader_of(status, NOW) == "a"
    assert leader_of({}, NOW) is None


def test_leadership_reads_only_its_own_peering_object():
    mine = Leadership("a", "controlplane")
    mine.observe({"metadata": {"name": "other"}, "status": {"a": peer(99, 0)}})
    assert not mine.is_leader(NOW)
    mine.observe(
        {"metadata": {"name": "controlplane"}, "status": {"a": peer(99, 0), "b": peer(1, 0)}}
    )
    assert mine.is_leader(NOW)
    assert not mine.is_leader(NOW + timedelta(seconds=90))  # its own keep-alive went stale
    assert Leadership("x", None).is_leader()  # no peering: always the writer
