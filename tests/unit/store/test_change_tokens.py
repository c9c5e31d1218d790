"""The store computes a change's dependency tokens once, and they are those of the change."""

from __future__ import annotations

from controlplane.api.issues import ResourceKey
from controlplane.api.resources import key_of
from controlplane.store import ChangeSet, Snapshot, Store
from controlplane.store.dependencies import change_tokens
from tests.corpus import load_corpus
from tests.documents import submissions
from tests.xds.mesh import MESH, canary

POD = """
apiVersion: v1
kind: Pod
metadata: {name: ratings-2, namespace: default, labels: {app: ratings}}
status: {podIP: 127.0.6.4}
"""

BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: nowhere}
"""


class Recorded:
    def __init__(self) -> None:
        self.store = Store()
        self.seen: list[tuple[Snapshot, ChangeSet]] = []
        self.store.subscribe(lambda snapshot, change: self.seen.append((snapshot, change)))

    def apply(self, text: str = "", deletes: tuple[ResourceKey, ...] = ()) -> ChangeSet:
        before = self.store.snapshot
        change = self.store.apply(upserts=submissions(text) if text else (), deletes=deletes)
        after = self.store.snapshot
        if change:
            assert change.tokens is not None and after.change is change.tokens
            keys = change.changed | change.status_changed
            assert change.tokens.since == before.version and change.tokens.keys == keys
            assert change.tokens.touched == change_tokens(before, after, keys)
        return change


def test_the_change_set_carries_the_tokens_of_exactly_its_change() -> None:
    recorded = Recorded()
    recorded.apply(MESH)
    recorded.apply(canary(90, 10))
    recorded.apply(POD)
    recorded.apply(canary(50, 50))
    recorded.apply(deletes=(ResourceKey("Pod", "default", "ratings-2"),))
    assert len(recorded.seen) == 5


def test_changes_checked_in_context_carry_their_tokens_too() -> None:
    recorded = Recorded()
    recorded.apply(MESH)
    recorded.apply(canary(90, 10))
    recorded.apply(BROKEN)
    recorded.apply(deletes=(ResourceKey("DestinationRule", "default", "reviews"),))
    recorded.apply(canary(80, 20))
    assert len(recorded.seen) >= 4


def test_tokens_say_which_change_they_describe() -> None:
    recorded = Recorded()
    recorded.apply(MESH)
    change = recorded.apply(canary(90, 10))
    assert change.tokens is not None
    keys = change.changed | change.status_changed
    assert change.tokens.between(change.tokens.since, keys) == change.tokens.touched
    assert change.tokens.between(change.tokens.since - 1, keys) is None
    assert change.tokens.between(change.tokens.since, keys - {next(iter(keys))}) is None


def test_nothing_changed_means_no_tokens() -> None:
    recorded = Recorded()
    recorded.apply(MESH)
    change = recorded.apply(MESH)
    assert not change and change.tokens is None


def test_every_corpus_document_applied_one_by_one_carries_the_tokens_of_its_change() -> None:
    recorded = Recorded()
    corpus = load_corpus()
    for submission in corpus.submissions:
        before = recorded.store.snapshot
        change = recorded.store.apply(upserts=[submission])
        if change:
            assert change.tokens is not None
            keys = change.changed | change.status_changed
            after = recorded.store.snapshot
            assert change.tokens.touched == change_tokens(before, after, keys)
    for submission in reversed(corpus.submissions):
        before = recorded.store.snapshot
        change = recorded.store.apply(deletes=[key_of(submission.resource)])
        if change:
            assert change.tokens is not None
            keys = change.changed | change.status_changed
            after = recorded.store.snapshot
            assert change.tokens.touched == change_tokens(before, after, keys)
