"""File mode: an Istio kind this control plane does not implement is read, kept in the store
(so status and analyze can report it), logged as having no effect, and never compiled."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controlplane.api.issues import ResourceKey
from controlplane.api.resources import MODELS
from controlplane.api.unsupported import UNSUPPORTED_KINDS
from controlplane.sources.files import FileSource
from controlplane.sources.kube.watch import WATCHED
from controlplane.store import Store

ENVOY_FILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: add-lua, namespace: default}
spec:
  configPatches: [{applyTo: HTTP_FILTER}]
"""


def test_an_envoy_filter_is_kept_and_logged_as_having_no_effect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "filter.yaml").write_text(ENVOY_FILTER)
    store = Store()
    with caplog.at_level(logging.WARNING, logger="controlplane"):
        FileSource(tmp_path, store).scan()
    key = ResourceKey("EnvoyFilter", "default", "add-lua")
    assert store.snapshot.get(key) is not None
    [status] = [s for k, s in store.snapshot.status.items() if k == key]
    assert [i.code.id for i in status.issues] == ["CP0560"]
    lines = [r.getMessage() for r in caplog.records if "CP0560" in r.getMessage()]
    assert len(lines) == 1
    assert "EnvoyFilter default/add-lua" in lines[0]
    assert "not supported" in lines[0] and "no effect" in lines[0]


def test_every_unsupported_kind_is_read_and_watched_and_none_is_implemented_twice() -> None:
    watched = {(g, p) for g, _, p in WATCHED}
    for kind in UNSUPPORTED_KINDS:
        assert (kind.group, kind.plural) in watched, kind
        assert MODELS[(kind.group, kind.kind)].__name__ == "UnsupportedResource", kind
    implemented_elsewhere = {"Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar"}
    assert not implemented_elsewhere & {k.kind for k in UNSUPPORTED_KINDS}
