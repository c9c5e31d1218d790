"""The Programmed verdict (status/programmed.py) and its rate-limited status writes: counts
while proxies lag, True once all affected proxies ran a snapshot with the generation, a NACK
on the resource that produced it, and a canary that costs one write per resource."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from controlplane.api import load
from controlplane.api.issues import ResourceKey
from controlplane.cache import CompiledCache
from controlplane.compile.proxy import proxy_from_node
from controlplane.status.programmed import ProgrammedTracker
from controlplane.status.verdict import Programmed
from controlplane.status.writer import StatusWriter
from controlplane.store import Store
from tests.documents import submissions
from tests.support import meshes

VS = ResourceKey("VirtualService", "default", "reviews")
RATINGS_VS = ResourceKey("VirtualService", "default", "ratings")


@dataclass
class FakeNack:
    type: str
    message: str
    resource_names: tuple[str, ...]


@dataclass
class FakeProxy:
    stream: str
    node_id: str
    proxy: object
    current: bool = True
    nacks: list[FakeNack] = field(default_factory=list)


def sidecar(i: int, app: str = "productpage") -> FakeProxy:
    node = f"sidecar~10.0.0.{i}~{app}-{i}.default~default.svc.cluster.local"
    return FakeProxy(str(i), node, proxy_from_node(node, {"NAMESPACE": "default"}, ""))


def mesh(v2_weight: int, ratings_regex: str = "/ok/.*") -> str:
    return meshes.join(
        meshes.reviews("10.1.0.1", "10.1.0.2", rule=False),
        meshes.ratings("10.1.0.3"),
        meshes.subsets("reviews"),
        meshes.split("reviews", {"v1": 100 - v2_weight, "v2": v2_weight}),
        meshes.virtual_service(
            "ratings",
            f"""
            http:
            - match: [{{uri: {{regex: "{ratings_regex}"}}}}]
              route: [{{destination: {{host: ratings}}}}]
            """,
        ),
    )


def apply(store: Store, text: str) -> None:
    store.apply(upserts=submissions(text))


def setup(proxies: list[FakeProxy]) -> tuple[Store, CompiledCache, ProgrammedTracker]:
    store = Store()
    apply(store, mesh(10))
    cache = CompiledCache(store)
    tracker = ProgrammedTracker(store, cache, lambda: proxies)
    return store, cache, tracker


def test_a_change_is_pending_with_the_count_until_every_affected_proxy_runs_it() -> None:
    proxies = [sidecar(i) for i in range(3)]
    store, cache, tracker = setup(proxies)
    tracker.evaluate()
    assert tracker.verdicts[VS].message == "3 of 3 proxies on generation 1"

    apply(store, mesh(50))
    cache.publish(store.snapshot, changed={VS})
    proxies[2].current = False  # woken, not yet ACKed
    proxies[0].current = proxies[1].current = True
    moved = tracker.evaluate()
    verdict = tracker.verdicts[VS]
    assert VS in moved and not verdict.programmed and verdict.reason == "Pending"
    assert verdict.message == "1 of 3 proxies still on generation 1"
    assert verdict.generation == 2
    # A resource the change did not touch stays Programmed: the lagging proxy runs it.
    assert tracker.verdicts[RATINGS_VS].programmed

    proxies[2].current = True
    tracker.evaluate()
    assert tracker.verdicts[VS].programmed
    assert tracker.verdicts[VS].message == "3 of 3 proxies on generation 2"


def test_a_change_not_yet_published_is_pending_on_every_affected_proxy() -> None:
    proxies = [sidecar(i) for i in range(2)]
    store, cache, tracker = setup(proxies)
    tracker.evaluate()
    apply(store, mesh(50))  # the cache has not published it (debounce)
    tracker.evaluate()
    assert tracker.verdicts[VS].message == "2 of 2 proxies still on generation 1"


def test_a_nack_is_attributed_to_the_resource_that_changed_not_to_its_neighbours() -> None:
    proxies = [sidecar(i) for i in range(2)]
    store, cache, tracker = setup(proxies)
    tracker.evaluate()
    apply(store, mesh(10, ratings_regex="/(a|b){1,20}"))
    cache.publish(store.snapshot, changed={RATINGS_VS})
    rds = sorted(
        cache.resources_for(proxies[0].proxy).of(  # type: ignore[arg-type]
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
        )
    )
    proxies[0].current = False
    proxies[0].nacks = [FakeNack("RDS", "regex program size 364 > 100", tuple(rds))]
    tracker.evaluate()
    ratings = tracker.verdicts[RATINGS_VS]
    assert ratings.reason == "Rejected" and not ratings.programmed
    assert proxies[0].node_id in ratings.message and "program size" in ratings.message
    assert [r.proxy for r in ratings.rejections] == [proxies[0].node_id]
    # The reviews VirtualService shares the route table but did not change: not blamed.
    assert tracker.verdicts[VS].reason != "Rejected"
    assert tracker.attributed == {"VirtualService": 1}


class Verdicts:
    def __init__(self) -> None:
        self.verdicts: dict[ResourceKey, Programmed] = {}
        self.listeners: list = []

    def set(self, verdict: Programmed) -> None:
        self.verdicts[KEY] = verdict
        for listener in self.listeners:
            listener({KEY})


KEY = ResourceKey("VirtualService", "shop", "reviews")


class CountingClient:
    def __init__(self) -> None:
        self.patches: list[dict] = []
        self.events: list[dict] = []

    def patch_status(self, group, version, plural, key, status):
        self.patches.append(status)
        return {"metadata": {"uid": "u-1"}}

    def create_event(self, namespace, event):
        self.events.append(event)


def vs_doc(generation: int):
    return load(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop", "generation": generation},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "r"}}]}]},
        }
    )[0]


def programmed_of(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}["Programmed"]


def test_a_canary_that_converges_within_the_grace_costs_one_write() -> None:
    from controlplane.store import Submission

    async def scenario() -> CountingClient:
        store = Store()
        client = CountingClient()
        verdicts = Verdicts()
        writer = StatusWriter(
            store,
            client,
            leadership_poll=0.02,
            programmed=verdicts,
            pending_grace=0.3,
            pending_interval=1.0,
        )
        writer.start()
        store.apply(upserts=[Submission(vs_doc(1))])
        verdicts.set(Programmed(1, True, "Programmed", "1000 of 1000 proxies on generation 1"))
        await asyncio.sleep(0.1)
        written = len(client.patches)
        # A push in flight: the count moves many times, then every proxy has it.
        for left in range(1000, 0, -100):
            verdicts.set(
                Programmed(2, False, "Pending", f"{left} of 1,000 proxies still on generation 1")
            )
            await asyncio.sleep(0.01)
        verdicts.set(Programmed(2, True, "Programmed", "1,000 of 1,000 proxies on generation 2"))
        await asyncio.sleep(0.5)
        assert len(client.patches) == written + 1, client.patches[written:]
        assert programmed_of(client.patches[-1])["observedGeneration"] == 2
        # A push that lasts: one False with the count after the grace, at most one more per
        # interval, then the True.
        for step in range(30):
            verdicts.set(
                Programmed(3, False, "Pending", f"{1000 - step} of 1,000 proxies still on 2")
            )
            await asyncio.sleep(0.05)
        verdicts.set(Programmed(3, True, "Programmed", "1,000 of 1,000 proxies on generation 3"))
        await asyncio.sleep(0.2)
        await writer.stop()
        return client

    client = asyncio.run(scenario())
    last = [programmed_of(p) for p in client.patches[-4:]]
    pending = [c for c in last if c["status"] == "False"]
    assert 1 <= len(pending) <= 2, last
    assert last[-1]["status"] == "True" and last[-1]["observedGeneration"] == 3


def test_a_nack_verdict_is_written_at_once_with_a_warning_event() -> None:
    from controlplane.status.verdict import Rejection
    from controlplane.store import Submission

    async def scenario() -> CountingClient:
        store = Store()
        client = CountingClient()
        verdicts = Verdicts()
        writer = StatusWriter(store, client, leadership_poll=0.02, programmed=verdicts)
        writer.start()
        store.apply(upserts=[Submission(vs_doc(4))])
        rejection = Rejection("sidecar~a", "RDS", ("80",), "regex program size 364 > 100")
        verdicts.set(
            Programmed(4, False, "Rejected", "proxy sidecar~a rejected RDS 80: program size",
                       rejections=(rejection,))
        )  # fmt: skip
        await asyncio.sleep(0.15)
        await writer.stop()
        return client

    client = asyncio.run(scenario())
    cond = programmed_of(client.patches[-1])
    assert cond["status"] == "False" and cond["reason"] == "Rejected"
    events = [e for e in client.events if e["reason"] == "RejectedByProxy"]
    assert len(events) == 1 and "program size" in events[0]["message"]
    assert events[0]["involvedObject"]["uid"] == "u-1"
