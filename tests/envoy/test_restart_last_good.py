"""The last good version survives a restart (file mode's state directory): a control plane
restarted on a directory whose VirtualService is now broken keeps the canary split a real
Envoy was following, and says which version it serves and why."""

from __future__ import annotations

import re

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes

V1, V2 = "127.0.0.21", "127.0.0.22"
REQUESTS = 300


def canary(w1: int, w2: int) -> str:
    return meshes.split("reviews", {"v1": w1, "v2": w2})


def start(mesh: LocalMesh) -> Sidecar:
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port, rule=False))
    mesh.write("dr.yaml", meshes.subsets("reviews"))
    mesh.write("vs.yaml", canary(100, 0))
    mesh.start()
    return mesh.sidecar(
        "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
        labels={"app": "productpage"},
        service_account="productpage",
    )


def restart_with_broken_file(mesh: LocalMesh, sidecar: Sidecar) -> dict[str, int]:
    """100/0 before; stop; the file is broken while down; start; the split after."""
    before = count_backends(sidecar.outbound_port, "reviews:9080", REQUESTS)
    assert before == {"reviews-v1": REQUESTS}, before
    mesh.control_plane.stop()
    mesh.write("vs.yaml", canary(100, 0).replace("weight: 0", "weight: -5"))
    mesh.control_plane.start()
    mesh.debug.wait_synced(sidecar.node_id, timeout=30)
    return dict(count_backends(sidecar.outbound_port, "reviews:9080", REQUESTS))


def test_a_canary_split_stays_as_it_was_across_a_restart_with_a_broken_file(
    mesh: LocalMesh,
) -> None:
    sidecar = start(mesh)
    after = restart_with_broken_file(mesh, sidecar)
    assert after == {"reviews-v1": REQUESTS}, after  # before the state directory: 57/43
    # The refusal is reported as before, then which version is served.
    log = mesh.control_plane.log_text()
    refused = [ln for ln in log.splitlines() if "route[1].weight" in ln]
    assert refused and "vs.yaml:" in refused[-1], mesh.control_plane.log_tail()
    served = [ln for ln in log.splitlines() if "CP0110" in ln]
    assert len(served) == 1, mesh.control_plane.log_tail()
    assert "VirtualService default/reviews" in served[0]
    assert re.search(r"the last good version from 20\d\d-\d\d-\d\dT[\d:.]+Z is served", served[0])
    status = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    vs = status["VirtualService default/reviews"]
    assert vs["accepted"] is False, vs
    assert "is served" in str(vs), vs
    # Deleting the file still deletes the VirtualService: round robin over both versions.
    mesh.remove("vs.yaml")
    deadline_counts: dict[str, int] = {}
    for _ in range(50):
        deadline_counts = dict(count_backends(sidecar.outbound_port, "reviews:9080", 40))
        if len(deadline_counts) == 2:
            break
    assert set(deadline_counts) == {"reviews-v1", "reviews-v2"}, deadline_counts


@pytest.mark.slow
def test_without_the_state_directory_the_restart_loses_the_split(mesh: LocalMesh) -> None:
    """The control: `--no-state` behaves as before (the VirtualService is gone after the
    restart and both versions get traffic), so the test above can tell."""
    mesh.control_plane.extra_args.append("--no-state")
    sidecar = start(mesh)
    after = restart_with_broken_file(mesh, sidecar)
    assert set(after) == {"reviews-v1", "reviews-v2"}, after
