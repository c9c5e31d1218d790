"""One generator per xDS type, registered by type URL; the compiler dispatches to them."""

from __future__ import annotations

import pytest

from controlplane.compile import GENERATORS, SHAPE_DERIVED, SnapshotCompiler, recording_proxy
from controlplane.compile.memo import Family
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    VIRTUAL_HOST,
)
from controlplane.store import Store
from tests.documents import submissions
from tests.unit.compile.helpers import local_proxy
from tests.xds.mesh import MESH, canary

POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {}
"""


def transparent_proxy() -> Proxy:
    return proxy_from_node("sidecar~127.0.6.1~reviews-1.default~default.svc.cluster.local", {})


PROXIES = [local_proxy(), transparent_proxy()]


def test_generators_are_registered_by_type_url_in_push_order() -> None:
    assert list(GENERATORS) == [t for t in PUSH_ORDER if t in GENERATORS]
    assert set(GENERATORS) == {CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST}
    for type_url, generator in GENERATORS.items():
        assert generator.type_url == type_url and generator.pushed_by


@pytest.mark.parametrize("proxy", PROXIES, ids=["local", "transparent"])
def test_one_type_alone_is_what_the_whole_compile_gives_for_it(proxy: Proxy) -> None:
    store = Store()
    store.apply(upserts=submissions(MESH + "---\n" + canary(90, 10)))
    compiler = SnapshotCompiler(store.snapshot)
    whole = compiler.compile(proxy)
    for type_url in GENERATORS:
        alone = compiler.generate(type_url, proxy)
        assert alone.keys() == whole.of(type_url).keys()
        assert all(alone[name] is whole.of(type_url)[name] for name in alone)


@pytest.mark.parametrize("proxy", PROXIES, ids=["local", "transparent"])
def test_a_change_of_a_kind_no_generator_is_pushed_by_keeps_its_resources(proxy: Proxy) -> None:
    store = Store()
    store.apply(upserts=submissions(MESH + "---\n" + canary(90, 10)))
    compiler = SnapshotCompiler(store.snapshot)
    before = compiler.compile(proxy)
    change = store.apply(upserts=submissions(POLICY))
    compiler, _ = SnapshotCompiler.following(
        compiler, store.snapshot, change.changed | change.status_changed
    )
    after = compiler.compile(proxy)
    for type_url, generator in GENERATORS.items():
        if "AuthorizationPolicy" in generator.pushed_by:
            continue
        old, new = before.of(type_url), after.of(type_url)
        assert new.keys() == old.keys()
        assert all(new[name] is old[name] for name in new), type_url


def test_memo_keys_name_their_family() -> None:
    store = Store()
    store.apply(upserts=submissions(MESH))
    compiler = SnapshotCompiler(store.snapshot)
    compiler.compile(local_proxy())
    families = {key[0] for key in compiler.memo_dependencies()}
    assert families and all(isinstance(family, Family) for family in families)
    assert Family.LOAD_ASSIGNMENT in families and Family.LOCAL_ROUTES in families


def test_the_compiler_reads_through_its_tracking_view_not_the_snapshot() -> None:
    store = Store()
    store.apply(upserts=submissions(MESH))
    compiler = SnapshotCompiler(store.snapshot)
    assert compiler.snapshot is store.snapshot and compiler.reads.snapshot is store.snapshot
    recorder = compiler.reads.start_recording()
    compiler.compile(local_proxy())
    compiler.reads.stop_recording(recorder)
    assert ("kind", "Service") in recorder.tokens


def test_a_recording_proxy_names_the_fields_read_and_shape_derived_values_need_no_view() -> None:
    store = Store()
    store.apply(upserts=submissions(MESH))
    tracked, reads = recording_proxy(local_proxy())
    assert tracked.namespace == "default" and reads == {"namespace"}
    ports = SHAPE_DERIVED["ips"](store.snapshot, transparent_proxy())
    assert ports  # reviews-1's address serves the reviews port
