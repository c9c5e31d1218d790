"""A proxy whose next push cannot be built is reported ERROR with the reason, by the debug
port's state, CSDS and `proxy-status`, never SYNCED (issue 11, part 2)."""

from __future__ import annotations

from envoy.admin.v3 import config_dump_shared_pb2 as dump
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.status.v3 import csds_pb2

from controlplane.cli.proxy_status import render_status
from controlplane.compile.resources import CLUSTER, CompiledResource
from controlplane.xds.csds import _type_configs
from controlplane.xds.state import PushError, TypeState


def _synced_state() -> TypeState:
    resource = CompiledResource("c", cluster_pb2.Cluster(name="c"))
    state = TypeState(CLUSTER, subscribed=True, wildcard=True, sent_view={"c": resource})
    state.sent_version = state.acked_version = "v1"
    return state


def test_a_push_error_is_never_synced_and_says_why() -> None:
    state = _synced_state()
    assert state.synced == "SYNCED"
    state.push_error = PushError("compiling this proxy's configuration failed: boom", 1.0)
    assert state.synced == "ERROR"
    described = state.describe()
    assert described["status"] == "ERROR" and "boom" in described["error"]["message"]

    (config,) = _type_configs(state, with_contents=False)
    assert config.config_status == csds_pb2.ERROR
    assert config.client_status != dump.ACKED
    assert "boom" in config.error_state.details

    table = render_status(
        [{"node_id": "n1", "connected_at": 0.0, "protocol": "sotw", "types": {"cds": described}}]
    )
    assert "ERROR:v1" in table and "SYNCED" not in table
    assert "n1 cds: ERROR" in table and "not being updated" in table and "boom" in table

    state.push_error = None  # the next push was built
    assert state.synced == "SYNCED"
