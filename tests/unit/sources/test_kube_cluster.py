"""Cluster-source decisions that need no cluster: native sidecars by server version."""

from __future__ import annotations

import pytest

from controlplane.sources.kube import cluster


@pytest.mark.parametrize(
    ("major", "minor", "native"),
    [("1", "35", True), ("1", "29", True), ("1", "28", False), ("1", "27+", False)],
)
def test_native_sidecars_are_used_from_kubernetes_1_29(monkeypatch, major, minor, native):
    class KubeApi:  # the apiserver's GET /version
        def __init__(self, api_client: object) -> None:
            pass

        def get(self, path: str) -> tuple[int, dict[str, str]]:
            assert path == "/version"
            return 200, {"major": major, "minor": minor}

    monkeypatch.setattr(cluster, "KubeApi", KubeApi)
    assert cluster.supports_native_sidecars(object()) is native
