"""With the mesh CA on, a stream is woken only when something it holds may have changed: a
publish that leaves a proxy's resources alone does not wake it, and a certificate rotation
wakes only the streams holding that identity's secret (real grpc streams, in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.app import load_ca
from controlplane.ca import Identity
from controlplane.cache import SecretCache
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, SECRET
from controlplane.testing.ads_client import AdsConnection, delta_request
from controlplane.xds.identity import StreamInfo
from tests.xds.conftest import ControlPlane, serving
from tests.xds.mesh import MESH, local_node
from tests.xds.test_delta import ack, names

# A Pod no Service selects, in a namespace of its own: no proxy's resources depend on it.
UNRELATED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: batch-1, namespace: jobs, labels: {app: batch}}
status: {podIP: 127.0.6.90}
"""


def proven(proxy: Proxy, info: StreamInfo) -> Proxy:
    """Authenticates every proxy as the service account it claims (as a valid token would)."""
    spiffe = f"spiffe://{proxy.trust_domain}/ns/{proxy.namespace}/sa/{proxy.service_account}"
    return replace(proxy, identity=spiffe)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, SecretCache]]:
    secrets = SecretCache(load_ca(tmp_path / "ca", "cluster.local", 3600.0))
    async with serving({SECRET: secrets}, authenticator=proven) as control_plane:
        control_plane.apply(MESH)
        yield control_plane, secrets


def count_pushes(stream: Any) -> list[int]:
    """Counts the times ``stream`` is woken from now on (each wake runs one push)."""
    count = [0]
    push = stream._push

    async def counted() -> None:
        count[0] += 1
        await push()

    stream._push = counted
    return count


async def holding_secrets(conn: AdsConnection, name: str, account: str) -> None:
    await conn.send(delta_request(CLUSTER, node_message=local_node(name, SERVICE_ACCOUNT=account)))
    await ack(conn, await conn.recv())
    await conn.send(delta_request(SECRET, ["default", "ROOTCA"]))
    sds = await conn.recv()
    assert sds.type_url == SECRET and names(sds) == ["ROOTCA", "default"]
    await ack(conn, sds)


async def test_with_the_ca_on_a_publish_that_changes_nothing_a_proxy_holds_does_not_wake_it(
    secured: tuple[ControlPlane, SecretCache],
) -> None:
    control_plane, _ = secured
    async with AdsConnection(control_plane.target, delta=True) as conn:
        await holding_secrets(conn, "a", "reviews")
        await conn.expect_nothing(0.2)
        pushes = count_pushes(control_plane.stream_of(local_node("a").id))
        control_plane.apply(UNRELATED_POD)
        await conn.expect_nothing(0.3)
        assert control_plane.hub.last_publish["streams_woken"] == 0
        assert pushes == [0]


async def test_a_certificate_rotation_wakes_only_the_streams_holding_that_secret(
    secured: tuple[ControlPlane, SecretCache],
) -> None:
    control_plane, secrets = secured
    async with (
        AdsConnection(control_plane.target, delta=True) as reviews,
        AdsConnection(control_plane.target, delta=True) as ratings,
        AdsConnection(control_plane.target, delta=True) as reviews_without_sds,
    ):
        await holding_secrets(reviews, "reviews-1", "reviews")
        await holding_secrets(ratings, "ratings-1", "ratings")
        await reviews_without_sds.send(
            delta_request(CLUSTER, node_message=local_node("reviews-2", SERVICE_ACCOUNT="reviews"))
        )
        await ack(reviews_without_sds, await reviews_without_sds.recv())
        await reviews.expect_nothing(0.2)
        counts = {
            name: count_pushes(control_plane.stream_of(local_node(name).id))
            for name in ("reviews-1", "ratings-1", "reviews-2")
        }
        # The reviews certificate is due: forget it, so that renewing issues a new one.
        identity = Identity("cluster.local", "default", "reviews")
        secrets.certs.discard(identity)
        assert secrets.renew_and_wake() == {identity}
        rotated = await reviews.recv()
        assert rotated.type_url == SECRET and names(rotated) == ["default"]
        await ack(reviews, rotated)
        await ratings.expect_nothing(0.3)
        await reviews_without_sds.expect_nothing(0.1)
        assert counts["reviews-1"][0] >= 1
        assert counts["ratings-1"] == [0]
        assert counts["reviews-2"] == [0]
