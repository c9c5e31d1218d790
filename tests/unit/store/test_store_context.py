"""In-context findings kept by the store: what logs and status show, as the mesh changes."""

from __future__ import annotations

from controlplane.api.issues import ResourceKey
from controlplane.store import Store, Submission
from tests.documents import submissions as shared_submissions
from tests.support import meshes

REGISTRY = meshes.join(
    meshes.service("reviews"),
    meshes.pod("reviews-v1", "10.0.0.1", app="reviews", version="v1"),
    meshes.resource(
        "DestinationRule",
        "reviews",
        """
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""",
    ),
)

V2_POD = meshes.pod("reviews-v2", "10.0.0.2", app="reviews", version="v2")

RULE = ResourceKey("DestinationRule", "default", "reviews")


def codes(store: Store) -> list[str]:
    status = store.snapshot.status.get(RULE)
    return [i.code.id for i in status.issues] if status else []


def test_a_subset_without_pods_is_in_the_rules_status_until_a_pod_arrives() -> None:
    store = Store()
    store.apply(upserts=submissions(REGISTRY))
    assert codes(store) == ["CP0304"]
    status = store.snapshot.status[RULE]
    assert status.reconciled  # a warning: the rule is in effect all the same
    change = store.apply(upserts=submissions(V2_POD))
    assert RULE in change.status_changed
    assert codes(store) == []
    store.apply(deletes=[ResourceKey("Pod", "default", "reviews-v2")])
    assert codes(store) == ["CP0304"]


def submissions(text: str) -> list[Submission]:
    return shared_submissions(text, "registry.yaml:1")
