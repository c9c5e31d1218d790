"""Cluster-source decisions that need no cluster: native sidecars by server version."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from controlplane.sources.kube import cluster


@pytest.mark.parametrize(
    ("major", "minor", "native"),
    [("1", "35", True), ("1", "29", True), ("1", "28", False), ("1", "27+", False)],
)
def test_native_sidecars_are_used_from_kubernetes_1_29(monkeypatch, major, minor, native):
    class VersionApi:
        def __init__(self, api_client: object) -> None:
            pass

        def get_code(self) -> SimpleNamespace:
            return SimpleNamespace(major=major, minor=minor)

    from kubernetes import client

    monkeypatch.setattr(client, "VersionApi", VersionApi)
    assert cluster.supports_native_sidecars(object()) is native
