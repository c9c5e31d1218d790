"""A proxy that stops reading holds up nobody but itself."""

from __future__ import annotations

import time

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from controlplane.cache import CompiledCache
from controlplane.compile.resources import ROUTE
from controlplane.store import Store
from controlplane.testing.ads_client import AdsConnection, delta_request
from controlplane.testing.ports import free_port
from controlplane.xds.delivery import PushLimits
from controlplane.xds.server import XdsServer
from tests.documents import submissions
from tests.xds.mesh import local_node
from tests.xds.test_delta import ack

SERVICES = 150


def services() -> str:
    """Many services, so that every route push is large (about 75 KB)."""
    return "---\n".join(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n"
        f"spec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80}}]\n"
        for i in range(SERVICES)
    )


def canary(weight: int) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: svc-0, namespace: default}\n"
        "spec:\n  hosts: [svc-0]\n  http:\n  - route:\n"
        f"    - {{destination: {{host: svc-0}}, weight: {weight}}}\n"
        f"    - {{destination: {{host: svc-1}}, weight: {100 - weight}}}\n"
    )


async def test_a_proxy_that_never_reads_does_not_delay_pushes_to_the_others() -> None:
    store = Store()
    store.apply(upserts=submissions(services() + "---\n" + canary(50)))
    # One push slot: if the stuck proxy kept it, nobody else would ever be pushed.
    hub = CompiledCache(store, debounce=0.01)
    server = XdsServer(hub, limits=PushLimits(max_concurrent_pushes=1, slow_write_after=0.2))
    hub.start()
    await server.start("127.0.0.1", free_port())
    target = f"127.0.0.1:{server.port}"
    try:
        # A stream whose responses are never read (not even by gRPC's client, which would
        # otherwise buffer them).
        channel = grpc.aio.insecure_channel(target)
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        await stuck.write(delta_request(ROUTE, ["local_15001"], node_message=local_node("stuck")))
        async with AdsConnection(target, delta=True) as good:
            await good.send(delta_request(ROUTE, ["local_15001"], node_message=local_node("good")))
            await ack(good, await good.recv())
            stuck_stream = next(
                s for s in server.streams.values() if s.proxy and "stuck" in s.proxy.node_id
            )
            # Push until gRPC's buffers for the stuck stream are full and its write blocks
            # (a few MB); the good proxy reads and ACKs each push meanwhile.
            latencies = []
            for step in range(300):
                changed = time.monotonic()
                store.apply(upserts=submissions(canary(1 + step % 98)))
                response = await good.recv(timeout=5)
                latencies.append(time.monotonic() - changed)
                assert response.type_url == ROUTE
                await ack(good, response)
                if stuck_stream.writing and step > 5:
                    break
            assert stuck_stream.writing, "the stuck proxy's write never blocked"
            # While it stays stuck, the good proxy still gets each change promptly.
            for weight in (7, 8, 9):
                changed = time.monotonic()
                store.apply(upserts=submissions(canary(weight)))
                await ack(good, await good.recv(timeout=5))
                latencies.append(time.monotonic() - changed)
                assert stuck_stream.writing
            # A push slot held by the stuck proxy would deliver nothing (recv times out at 5 s);
            # 4 s leaves room for a loaded machine's scheduling without losing that meaning.
            assert max(latencies) < 4.0, latencies
        stuck.cancel()
        await channel.close()
    finally:
        await server.stop(grace=0.1)
        await hub.stop()
