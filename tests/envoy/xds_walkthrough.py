"""One walk through every delivery rule with a real Envoy, shared by the SotW (``GRPC``) and
Delta (``DELTA_GRPC``) tests: initial config, a weight shift (RDS), a new pod (EDS only), a
deleted service (removal), a rejected config (NACK) and the last good config serving, and a
control-plane restart (reconnect to a consistent, current state)."""

from __future__ import annotations

import time

from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.support import meshes

V1, V2, RATINGS_1, RATINGS_2 = "127.0.6.21", "127.0.6.22", "127.0.6.23", "127.0.6.24"


def services(port: int) -> str:
    return meshes.reviews(V1, V2, target_port=port)


def ratings(port: int, pods: list[str]) -> str:
    return meshes.ratings(*pods, target_port=port, names=[f"ratings-{i}" for i in range(len(pods))])


def weights(v1: int, v2: int, regex: str = "/never/.*") -> str:
    never = {
        "match": [{"uri": {"regex": regex}}],
        "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
    }
    return meshes.split("reviews", {"v1": v1, "v2": v2}, first=[never])


# Valid for Istio, too large a regex program for Envoy: only Envoy can reject it.
HUGE_REGEX = "/(" + "|".join(f"item{i}" for i in range(60)) + "){1,20}"


def walk_through(mesh: LocalMesh, delta: bool) -> None:
    port = free_port()
    for name, ip in (("v1", V1), ("v2", V2), ("ratings-0", RATINGS_1), ("ratings-1", RATINGS_2)):
        mesh.backend(name, ip, port)
    mesh.write("reviews.yaml", services(port))
    mesh.write("ratings.yaml", ratings(port, [RATINGS_1]))
    mesh.write("vs.yaml", weights(100, 0))
    mesh.start()
    sidecar = mesh.sidecar(
        "sidecar~127.0.6.100~client.default~default.svc.cluster.local", delta=delta
    )
    proxy = mesh.debug.proxy(sidecar.node_id)
    assert proxy is not None and proxy["protocol"] == ("delta" if delta else "sotw")
    out = sidecar.outbound_port
    assert count_backends(out, "reviews:9080", 20) == {"v1": 20}
    assert count_backends(out, "ratings:9080", 10) == {"ratings-0": 10}

    # A weight shift: routes only.
    before = mesh.debug.wait_synced(sidecar.node_id)
    mesh.write("vs.yaml", weights(0, 100))
    after = mesh.debug.wait_synced(
        sidecar.node_id, newer_than={"rds": before["rds"]["acked_version"]}
    )
    assert count_backends(out, "reviews:9080", 20) == {"v2": 20}
    assert after["cds"]["acked_version"] == before["cds"]["acked_version"]
    assert after["eds"]["sent_at"] == before["eds"]["sent_at"]  # no EDS push for a route change

    # A new pod: endpoints only, and only the ratings assignment.
    eds_pushes = sidecar.envoy.stat(
        "cluster.outbound|9080||ratings.default.svc.cluster.local.update_success"
    )
    mesh.write("ratings.yaml", ratings(port, [RATINGS_1, RATINGS_2]))
    synced = mesh.debug.wait_synced(
        sidecar.node_id, newer_than={"eds": after["eds"]["acked_version"]}
    )
    assert synced["cds"]["acked_version"] == before["cds"]["acked_version"]
    assert synced["rds"]["sent_at"] == after["rds"]["sent_at"]
    deadline = time.time() + 10
    seen: set[str] = set()
    while time.time() < deadline and seen != {"ratings-0", "ratings-1"}:
        seen |= set(count_backends(out, "ratings:9080", 10))
    assert seen == {"ratings-0", "ratings-1"}
    assert (
        sidecar.envoy.stat(
            "cluster.outbound|9080||ratings.default.svc.cluster.local.update_success"
        )
        > eds_pushes
    )
    reviews_updates = sidecar.envoy.stat(
        "cluster.outbound|9080|v1|reviews.default.svc.cluster.local.update_success"
    )

    # A deleted service: its cluster and virtual host go.
    mesh.remove("ratings.yaml")
    mesh.debug.wait_synced(sidecar.node_id, newer_than={"cds": synced["cds"]["acked_version"]})
    deadline = time.time() + 10
    while time.time() < deadline and "ratings.default" in sidecar.envoy.admin("/clusters"):
        time.sleep(0.1)
    assert "ratings.default" not in sidecar.envoy.admin("/clusters")
    assert send(out, "ratings:9080")[0] == 404
    assert (
        sidecar.envoy.stat(
            "cluster.outbound|9080|v1|reviews.default.svc.cluster.local.update_success"
        )
        == reviews_updates
    )

    # A config Envoy rejects: NACK recorded, not re-sent, the last good routes keep serving.
    good = mesh.debug.wait_synced(sidecar.node_id)
    mesh.write("vs.yaml", weights(100, 0, HUGE_REGEX))
    deadline = time.time() + 10
    state = good["rds"]
    while time.time() < deadline and state.get("status") != "NACKED":
        state = mesh.debug.type_state(sidecar.node_id, "rds")
        time.sleep(0.05)
    assert state["status"] == "NACKED", state
    assert state["acked_version"] == good["rds"]["acked_version"]
    assert state["nack"]["resources"] == [f"local_{out}"]
    time.sleep(0.5)
    assert mesh.debug.type_state(sidecar.node_id, "rds")["sent_at"] == state["sent_at"]
    assert count_backends(out, "reviews:9080", 10) == {"v2": 10}
    nacks = [ln for ln in mesh.control_plane.log_text().splitlines() if "NACK from proxy" in ln]
    assert len(nacks) == 1, nacks

    # Fixed: sent, ACKed, followed.
    mesh.write("vs.yaml", weights(100, 0))
    fixed = mesh.debug.wait_synced(
        sidecar.node_id, newer_than={"rds": good["rds"]["acked_version"]}
    )
    assert count_backends(out, "reviews:9080", 20) == {"v1": 20}

    # The control plane restarts, with a change made while it was down: Envoy reconnects
    # (Delta: declaring the versions it has) and ends up with the full, current state.
    mesh.control_plane.stop()
    mesh.write("vs.yaml", weights(0, 100))
    assert count_backends(out, "reviews:9080", 10) == {"v1": 10}  # last config keeps serving
    mesh.control_plane.start()
    again = mesh.debug.wait_synced(sidecar.node_id, timeout=30)
    assert again["rds"]["acked_version"] != fixed["rds"]["acked_version"]
    assert again["cds"]["acked_version"] == fixed["cds"]["acked_version"]
    assert count_backends(out, "reviews:9080", 20) == {"v2": 20}
