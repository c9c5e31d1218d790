"""An in-process control plane (store, compiled-config cache, ADS + CSDS server, debug port) on
loopback, driven by a Python ADS client: fast protocol tests of the real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.api.resources import key_of
from controlplane.cache import CacheMux, CompiledCache, ConfigCache, XdsMetrics
from controlplane.store import Store
from controlplane.testing.ports import free_port
from controlplane.xds.debug import DebugServer
from controlplane.xds.server import XdsServer
from tests.documents import submissions


@dataclass
class ControlPlane:
    store: Store
    hub: CompiledCache
    xds: XdsServer
    debug: DebugServer
    cache: CacheMux

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
        for stream in self.xds.streams.values():
            if stream.proxy is not None and stream.proxy.node_id == node_id:
                return stream
        raise KeyError(node_id)


@asynccontextmanager
async def serving(
    by_type: Mapping[str, ConfigCache] | None = None, **server: Any
) -> AsyncIterator[ControlPlane]:
    """A control plane on loopback; ``by_type`` adds caches for some types (as the mesh CA
    adds its secrets), ``server`` goes to the XdsServer (authenticator, limits)."""
    store = Store()
    metrics = XdsMetrics()
    hub = CompiledCache(store, debounce=0.02, max_delay=1.0, metrics=metrics)
    cache = CacheMux(hub, by_type)
    xds = XdsServer(cache, metrics=metrics, **server)
    debug = DebugServer(xds, hub)
    hub.start()
    await xds.start("127.0.0.1", free_port())
    await debug.start("127.0.0.1", free_port())
    try:
        yield ControlPlane(store, hub, xds, debug, cache)
    finally:
        await debug.stop()
        await xds.stop(grace=0.1)
        await hub.stop()


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    async with serving() as served:
        yield served
