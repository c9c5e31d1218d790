"""A configuration Envoy refuses is NACKed: logged with the proxy, the resource and Envoy's
message, recorded per type, not re-sent in a loop, and the last good config keeps serving."""

from __future__ import annotations

import time

from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes

ADDRESS = "127.0.0.31"

# Valid RE2 and within Istio's validation rules, but its compiled program is larger than the
# limit Envoy enforces by default, so only Envoy can tell.
HUGE_REGEX = "/(" + "|".join(f"item{i}" for i in range(60)) + "){1,20}"


def virtual_service(regex: str) -> str:
    return meshes.virtual_service(
        "ratings",
        f"""
        http:
        - match: [{{uri: {{regex: "{regex}"}}}}]
          route: [{{destination: {{host: ratings}}}}]
        - route: [{{destination: {{host: ratings}}}}]
        """,
    )


def test_envoy_nack_is_recorded_logged_and_not_resent(mesh: LocalMesh) -> None:
    port = free_port()
    mesh.backend("ratings-v1", ADDRESS, port)
    mesh.write("ratings.yaml", meshes.ratings(ADDRESS, target_port=port))
    mesh.write("vs.yaml", virtual_service("/ok/.*"))
    mesh.start()
    sidecar = mesh.sidecar("sidecar~127.0.0.1~client.default~default.svc.cluster.local")
    good = mesh.debug.type_state(sidecar.node_id, "rds")

    mesh.write("vs.yaml", virtual_service(HUGE_REGEX))
    deadline = time.time() + 10
    state = good
    while time.time() < deadline:
        state = mesh.debug.type_state(sidecar.node_id, "rds")
        if state.get("status") == "NACKED":
            break
        time.sleep(0.05)
    assert state["status"] == "NACKED", state
    assert state["acked_version"] == good["acked_version"]
    assert "nack" in state and state["nack"]["version"] == state["sent_version"]
    assert "regex" in state["nack"]["message"].lower() or "program size" in state["nack"]["message"]

    log = mesh.control_plane.log_text()
    nack_lines = [line for line in log.splitlines() if "NACK from proxy" in line]
    assert len(nack_lines) == 1, nack_lines
    assert sidecar.node_id in nack_lines[0] and "local_" in nack_lines[0]

    # Not re-sent: nothing new goes out while nothing changes.
    sent_at = state["sent_at"]
    time.sleep(1.0)
    again = mesh.debug.type_state(sidecar.node_id, "rds")
    assert again["sent_at"] == sent_at and again["status"] == "NACKED"
    assert (
        len([ln for ln in mesh.control_plane.log_text().splitlines() if "NACK from proxy" in ln])
        == 1
    )

    # The proxy keeps serving its last good routes.
    assert count_backends(sidecar.outbound_port, "ratings:9080", 20) == {"ratings-v1": 20}

    # A fix is sent and ACKed.
    mesh.write("vs.yaml", virtual_service("/fixed/.*"))
    states = mesh.debug.wait_synced(
        sidecar.node_id, timeout=10, newer_than={"rds": good["acked_version"]}
    )
    assert states["rds"]["status"] == "SYNCED"
