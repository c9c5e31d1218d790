"""An in-process control plane (store, hub, ADS + CSDS server, debug port) on loopback, driven
by a Python ADS client: fast protocol tests of the real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.api.resources import key_of
from controlplane.store import Store
from controlplane.testing.ports import free_port
from controlplane.xds.debug import DebugServer
from controlplane.xds.hub import Hub
from controlplane.xds.server import XdsServer
from tests.documents import submissions


@dataclass
class ControlPlane:
    store: Store
    hub: Hub
    xds: XdsServer
    debug: DebugServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.xds.port}"

    def apply(self, text: str) -> None:
        """Apply to the store and publish at once (the debounce is tested on its own)."""
        self.store.apply(upserts=submissions(text))
        self.hub.flush()

    def delete(self, text: str) -> None:
        self.store.apply(deletes=[key_of(s.resource) for s in submissions(text)])
        self.hub.flush()

    def stream_of(self, node_id: str) -> Any:
        for stream in self.hub.streams.values():
            if stream.proxy is not None and stream.proxy.node_id == node_id:
                return stream
        raise KeyError(node_id)


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    store = Store()
    hub = Hub(store, debounce=0.02, max_delay=1.0)
    xds = XdsServer(hub)
    debug = DebugServer(hub)
    await xds.start("127.0.0.1", free_port())
    await debug.start("127.0.0.1", free_port())
    try:
        yield ControlPlane(store, hub, xds, debug)
    finally:
        await debug.stop()
        await xds.stop(grace=0.1)
