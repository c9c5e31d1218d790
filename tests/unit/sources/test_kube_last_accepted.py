"""Cluster mode: a restarted operator serves the last accepted generation of a resource whose
current generation is refused (kept in the resource's status.lastAccepted)."""

from __future__ import annotations

import copy

from controlplane.api import ResourceKey
from controlplane.api.issues import Codes
from controlplane.sources.kube.watch import translate
from controlplane.store import Store

KEY = ResourceKey("VirtualService", "shop", "reviews")
RULE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "shop", "generation": 1},
    "spec": {
        "host": "reviews",
        "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
    },
}


def raw(weights: tuple[int, int], generation: int, kept: dict | None = None) -> dict:
    route = [
        {"destination": {"host": "reviews", "subset": s}, "weight": w}
        for s, w in zip(("v1", "v2"), weights, strict=True)
    ]
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "generation": generation},
        "spec": {"hosts": ["reviews"], "http": [{"route": route}]},
    }
    if kept is not None:
        doc["status"] = {"observedGeneration": generation, "lastAccepted": kept}
    return doc


def weights(store: Store) -> list[int | None]:
    vs = store.snapshot.get(KEY)
    assert vs is not None
    return [d.weight for d in vs.spec.http[0].route]


def apply(store: Store, update) -> None:
    store.apply(
        upserts=[update.submission] if update.submission else [],
        rejections=[update.rejection] if update.rejection else [],
        restored=[update.restored] if update.restored is not None else [],
    )


def test_a_refused_generation_at_start_serves_the_last_accepted_one_and_says_so() -> None:
    good = raw((100, 0), 1)
    kept = {"generation": 1, "spec": copy.deepcopy(good["spec"])}
    update = translate(None, raw((100, -5), 2, kept))  # a listing, as after a restart
    assert update is not None and update.rejection is not None
    store = Store()
    apply(store, update)
    assert weights(store) == [100, 0]  # without status.lastAccepted: no VirtualService
    status = store.snapshot.status[KEY]
    assert not status.accepted and status.generation == 2
    served = [i for i in status.issues if i.code is Codes.LAST_GOOD_SERVED]
    assert [i.reason for i in served] == ["the last accepted generation 1 is served"]


def test_nothing_is_restored_from_the_current_generation_or_over_a_good_one() -> None:
    kept = {"generation": 2, "spec": raw((100, 0), 2)["spec"]}
    assert translate(None, raw((100, -5), 2, kept)).restored is None  # same generation
    store = Store()
    store.apply(upserts=[translate(None, RULE).submission])
    apply(store, translate(None, raw((50, 50), 3, {"generation": 1, "spec": kept["spec"]})))
    assert weights(store) == [50, 50]  # the current generation is good: it is served


def test_a_deleted_resource_is_not_brought_back() -> None:
    store = Store()
    apply(
        store,
        translate(None, raw((100, -5), 2, {"generation": 1, "spec": raw((100, 0), 1)["spec"]})),
    )
    assert store.snapshot.get(KEY) is not None
    deleted = translate("DELETED", raw((100, -5), 2))
    store.apply(deletes=[deleted.key])
    assert store.snapshot.get(KEY) is None
