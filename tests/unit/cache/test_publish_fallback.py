"""When the incremental publish fails, the cache recompiles the snapshot whole instead of
leaving every proxy on the previous one (issue 11, part 2)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.api.resources import parse_resource
from controlplane.cache import CompiledCache
from controlplane.compile import SnapshotCompiler
from controlplane.store import Store, Submission
from tests.support import meshes


def _apply(store: Store, text: str) -> None:
    store.apply(upserts=[Submission(parse_resource(d)) for d in yaml.safe_load_all(text) if d])


def test_a_failing_incremental_publish_falls_back_to_a_whole_recompile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    cache = CompiledCache(store)
    _apply(store, meshes.ratings("10.0.0.3"))
    cache.flush()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("injected: incremental bookkeeping")

    monkeypatch.setattr(SnapshotCompiler, "following", broken)
    _apply(store, meshes.reviews("10.0.0.1"))
    cache.flush()
    assert cache.snapshot.version == store.snapshot.version
    assert "reviews.default.svc.cluster.local" in cache.snapshot.services
