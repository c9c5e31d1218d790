"""Shared test wiring: tiers are marked by directory, so `-m "not envoy"` etc. select them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.testing.mesh import LocalMesh

_TIER_BY_DIR = {"envoy": "envoy", "kube": "kube", "netns": "netns"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            parts = Path(str(item.fspath)).relative_to(root).parts
        except ValueError:
            continue
        if parts and parts[0] in _TIER_BY_DIR:
            item.add_marker(getattr(pytest.mark, _TIER_BY_DIR[parts[0]]))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """A control plane (as a process) on an empty config directory; sidecars on demand."""
    local = LocalMesh(tmp_path)
    try:
        yield local
    finally:
        local.stop()
