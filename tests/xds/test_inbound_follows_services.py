"""A workload's inbound listeners follow the Services that select it: what a proxy must accept
is read from the registry (the service targets at its address), and a Service or Pod change
reaches that proxy's LDS through incremental recompilation."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2

from controlplane.compile.resources import LISTENER
from controlplane.testing.ads_client import AdsConnection, node, sotw_request
from tests.xds.conftest import ControlPlane

WORKLOAD_IP = "127.0.6.50"
NODE = node(
    f"sidecar~{WORKLOAD_IP}~details-v1.default~default.svc.cluster.local",
    {
        "NAMESPACE": "default",
        "LOCAL_OUTBOUND_PORT": "15001",
        "LOCAL_APP_ADDRESS": "127.0.6.150",
        "LABELS": {"app": "details"},
    },
)
POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: details-v1, namespace: default, labels: {{app: details}}}}
status: {{podIP: {WORKLOAD_IP}}}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 9080}]
"""


def listener_names(response) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for any_message in response.resources:
        listener = listener_pb2.Listener()
        any_message.Unpack(listener)
        out.append(listener.name)
    return sorted(out)


async def test_a_service_that_starts_selecting_the_workload_adds_its_inbound_listener(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(POD)
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(LISTENER, node_message=NODE))
        lds = await conn.recv()
        assert listener_names(lds) == ["127.0.0.1_15001"]
        await conn.send(sotw_request(LISTENER, version=lds.version_info, nonce=lds.nonce))

        control_plane.apply(SERVICE)  # now the workload serves details:9080
        lds = await conn.recv()
        assert lds.type_url == LISTENER
        assert listener_names(lds) == ["127.0.0.1_15001", f"{WORKLOAD_IP}_9080"]
        await conn.send(sotw_request(LISTENER, version=lds.version_info, nonce=lds.nonce))

        control_plane.delete(SERVICE)
        lds = await conn.recv()
        assert listener_names(lds) == ["127.0.0.1_15001"]


async def test_a_pod_moving_to_the_workloads_address_gives_it_the_pods_ports(
    control_plane: ControlPlane,
) -> None:
    control_plane.apply(SERVICE + "---\n" + POD.replace(WORKLOAD_IP, "127.0.6.51"))
    async with AdsConnection(control_plane.target) as conn:
        await conn.send(sotw_request(LISTENER, node_message=NODE))
        lds = await conn.recv()
        assert listener_names(lds) == ["127.0.0.1_15001"]
        await conn.send(sotw_request(LISTENER, version=lds.version_info, nonce=lds.nonce))

        control_plane.apply(POD)  # the pod's IP is now this workload's
        lds = await conn.recv()
        assert listener_names(lds) == ["127.0.0.1_15001", f"{WORKLOAD_IP}_9080"]


async def test_proxies_sharing_a_shape_part_when_a_service_selects_one_of_them(
    control_plane: ControlPlane,
) -> None:
    # Two sidecars at addresses no Service selects compile alike (one shared shape); when a
    # pod at one of the addresses gets a Service, only that sidecar gets an inbound listener.
    other = node(
        "sidecar~127.0.6.60~other.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LOCAL_OUTBOUND_PORT": "15001",
            "LOCAL_APP_ADDRESS": "127.0.6.150",
            "LABELS": {"app": "details"},
        },
    )
    # Exported to no namespace: no sidecar sends to it (so no shape reads its endpoints),
    # yet the workload it selects still serves it inbound.
    hidden = SERVICE.replace(
        "metadata: {name: details, namespace: default}",
        "metadata: {name: details, namespace: default, "
        'annotations: {networking.istio.io/exportTo: "~"}}',
    )
    control_plane.apply(hidden)
    async with (
        AdsConnection(control_plane.target) as mine,
        AdsConnection(control_plane.target) as theirs,
    ):
        # The other sidecar connects first: the shape is built from its address.
        for conn, who in ((theirs, other), (mine, NODE)):
            await conn.send(sotw_request(LISTENER, node_message=who))
            lds = await conn.recv()
            assert listener_names(lds) == ["127.0.0.1_15001"]
            await conn.send(sotw_request(LISTENER, version=lds.version_info, nonce=lds.nonce))
        assert len(control_plane.hub.shapes.shapes) == 1

        control_plane.apply(POD)  # a details pod at this sidecar's address
        lds = await mine.recv()
        assert listener_names(lds) == ["127.0.0.1_15001", f"{WORKLOAD_IP}_9080"]
        await theirs.expect_nothing(0.3)
