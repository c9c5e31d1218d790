"""istiod's metric names and label names on /metrics, scraped after what makes them move: a
push to a real Envoy, a NACK, a conflict. Istio's dashboards and alerts query these names
(pilot/pkg/xds/monitoring.go, pilot/pkg/model/push_context.go)."""

from __future__ import annotations

import time

import pytest

from controlplane.inject.bootstrap import ISTIO_VERSION
from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from tests.envoy.test_compile_containment import FAULTS
from tests.envoy.test_nack import HUGE_REGEX, virtual_service
from tests.support import meshes
from tests.support.prometheus import label_sets, scrape, value

ADDRESS = "127.0.0.33"
CLIENT = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"


def _wait_status(mesh: LocalMesh, node_id: str, type_: str, status: str) -> dict[str, object]:
    deadline = time.time() + 10
    state = mesh.debug.type_state(node_id, type_)
    while time.time() < deadline and state.get("status") != status:
        time.sleep(0.05)
        state = mesh.debug.type_state(node_id, type_)
    assert state.get("status") == status, state
    return state


def test_istio_metric_names_move_with_a_push_a_nack_and_a_conflict(mesh: LocalMesh) -> None:
    port = free_port()
    mesh.backend("ratings-v1", ADDRESS, port)
    mesh.write("ratings.yaml", meshes.ratings(ADDRESS, target_port=port))
    mesh.write("vs.yaml", virtual_service("/ok/.*"))
    mesh.start()
    sidecar = mesh.sidecar(CLIENT)
    base = mesh.debug.base
    before, types = scrape(base)

    # Connected proxies, by the Istio version their node metadata reports.
    assert label_sets(before, "pilot_xds") == [{"version": ISTIO_VERSION}]
    assert value(before, "pilot_xds", version=ISTIO_VERSION) == 1
    assert types["pilot_xds"] == "gauge"
    # The store's adds, as istiod's registry and config event counters.
    assert value(before, "pilot_k8s_reg_events", type="Services", event="add") >= 1
    assert value(before, "pilot_k8s_cfg_events", type="VirtualService", event="add") == 1

    # A push: a route change reaches the sidecar and is ACKed.
    rds = mesh.debug.type_state(sidecar.node_id, "rds")["acked_version"]
    mesh.write("vs.yaml", virtual_service("/fine/.*"))
    mesh.debug.wait_synced(sidecar.node_id, newer_than={"rds": rds})
    pushed, types = scrape(base)
    assert value(pushed, "pilot_xds_pushes", type="rds") > value(
        before, "pilot_xds_pushes", type="rds"
    )
    assert types["pilot_xds_pushes"] == "counter"
    assert value(pushed, "pilot_k8s_cfg_events", type="VirtualService", event="update") == 1
    assert value(pushed, "pilot_xds_push_time_count", type="rds") > value(
        before, "pilot_xds_push_time_count", type="rds"
    )
    assert types["pilot_xds_push_time"] == "histogram"
    # Convergence: change seen -> ACK, without labels, in istiod's buckets.
    assert value(pushed, "pilot_proxy_convergence_time_count") >= 1
    assert ("pilot_proxy_convergence_time_bucket", frozenset({("le", "30")})) in pushed
    assert value(pushed, "pilot_total_xds_rejects", type="rds") == 0
    assert value(pushed, "pilot_xds_push_context_errors") == 0

    # A NACK: a regex Envoy refuses.
    mesh.write("vs.yaml", virtual_service(HUGE_REGEX))
    _wait_status(mesh, sidecar.node_id, "rds", "NACKED")
    nacked, types = scrape(base)
    assert value(nacked, "pilot_total_xds_rejects", type="rds") == 1
    assert types["pilot_total_xds_rejects"] == "counter"
    assert value(nacked, "pilot_total_xds_rejects", type="cds") == 0

    # A conflict: a newer VirtualService claims the host the first one holds.
    assert value(nacked, "pilot_vservice_dup_domain") == 0
    mesh.write("vs.yaml", virtual_service("/ok/.*"))
    mesh.write(
        "vs2.yaml",
        meshes.virtual_service(
            "ratings", "http: [{route: [{destination: {host: ratings}}]}]", name="ratings-2"
        ),
    )
    deadline = time.time() + 10
    conflicted = nacked
    while time.time() < deadline and value(conflicted, "pilot_vservice_dup_domain") == 0:
        time.sleep(0.05)
        conflicted, types = scrape(base)
    assert value(conflicted, "pilot_vservice_dup_domain") == 1
    assert (
        value(
            conflicted,
            "controlplane_conflicts",
            finding="ConflictingVirtualServiceHosts",
            kind="VirtualService",
        )
        == 1
    )
    # Our own names are still there, beside istiod's.
    assert value(conflicted, "controlplane_xds_nacks_total", type="rds") == 1


def test_a_configuration_that_fails_to_compile_counts_as_a_push_context_error(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test-only compile faults of test_compile_containment: a Service named boom* makes
    # every proxy's compile raise (istiod's failure to build the push context).
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    port = free_port()
    mesh.backend("ratings-v1", ADDRESS, port)
    mesh.write("ratings.yaml", meshes.ratings(ADDRESS, target_port=port))
    mesh.start()
    sidecar = mesh.sidecar(CLIENT)
    base = mesh.debug.base
    assert value(scrape(base)[0], "pilot_xds_push_context_errors") == 0
    mesh.write("boom.yaml", meshes.service("boom", 9080))
    _wait_status(mesh, sidecar.node_id, "rds", "ERROR")
    assert value(scrape(base)[0], "pilot_xds_push_context_errors") >= 1
