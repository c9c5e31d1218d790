"""On-demand delivery with real Envoys (node metadata ``ON_DEMAND: "true"``, Delta ADS): a
sidecar starts with route configurations that hold no virtual host and without the outbound
HTTP clusters; its first request to a host makes Envoy fetch that host (VHDS) and its
cluster (on-demand CDS) and is served. A route change then reaches only the sidecars that
asked for that host, and carries that one host."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.support import meshes

V1, V2, RATINGS = "127.0.8.21", "127.0.8.22", "127.0.8.23"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
ON_DEMAND_TYPES = ("cds", "lds", "rds", "vhds")


def weights(v1: int, v2: int) -> str:
    return meshes.split("reviews", {"v1": v1, "v2": v2})


@pytest.fixture
def bookinfo(mesh: LocalMesh) -> LocalMesh:
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.backend("ratings-0", RATINGS, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port, rule=False))
    mesh.write("ratings.yaml", meshes.ratings(RATINGS, target_port=port, names=["ratings-0"]))
    mesh.write("dr.yaml", meshes.subsets("reviews"))
    mesh.write("vs.yaml", weights(100, 0))
    return mesh.start()


def on_demand_sidecar(mesh: LocalMesh, name: str) -> Sidecar:
    sidecar = mesh.sidecar(
        f"sidecar~127.0.0.1~{name}.default~default.svc.cluster.local",
        labels={"app": name},
        delta=True,
        extra_metadata={"ON_DEMAND": "true"},
        wait=False,
    )
    mesh.debug.wait_synced(sidecar.node_id, types=ON_DEMAND_TYPES, timeout=30)
    sidecar.envoy.wait_live()
    return sidecar


def envoy_clusters(sidecar: Sidecar) -> set[str]:
    return {
        line.split("::", 1)[0]
        for line in sidecar.envoy.admin("/clusters").splitlines()
        if line.startswith("outbound|")
    }


def virtual_hosts(sidecar: Sidecar) -> list[dict[str, Any]]:
    dump = sidecar.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    hosts: list[dict[str, Any]] = []
    for config in dump["configs"]:
        hosts.extend(config["route_config"].get("virtual_hosts", []))
        for vhds in config["route_config"].get("vhds_virtual_hosts", []) or []:
            hosts.append(vhds)
    return hosts


def route_stats(sidecar: Sidecar) -> dict[str, int]:
    """Envoy's own counts of RDS and VHDS updates it received."""
    out: dict[str, int] = {}
    for line in sidecar.envoy.admin("/stats?filter=rds").splitlines():
        name, _, value = line.partition(": ")
        if name.endswith(".update_attempt") or name.endswith(".config_reload"):
            out[name] = int(value)
    return out


def test_first_request_to_a_host_the_sidecar_did_not_have_is_served(bookinfo: LocalMesh) -> None:
    sidecar = on_demand_sidecar(bookinfo, "productpage")
    state = bookinfo.debug.proxy(sidecar.node_id)
    assert state is not None
    # Nothing of the mesh's HTTP services yet: no virtual host, no outbound HTTP cluster.
    assert state["types"]["vhds"]["resources"] == 0
    assert virtual_hosts(sidecar) == []
    assert envoy_clusters(sidecar) == set()

    status, _, body = send(sidecar.outbound_port, "reviews:9080")
    assert status == 200 and json.loads(body)["name"] == "reviews-v1", (status, body)

    # Envoy fetched one virtual host, named after the Host it was asked for, and the one
    # cluster the route chose.
    hosts = virtual_hosts(sidecar)
    assert [h["name"] for h in hosts] == [f"local_{sidecar.outbound_port}/reviews:9080"]
    assert hosts[0]["domains"] == ["reviews:9080"]
    assert envoy_clusters(sidecar) == {REVIEWS_V1}
    assert count_backends(sidecar.outbound_port, "reviews:9080", 20) == {"reviews-v1": 20}

    # A second host, then a Host no service has: 404, as the full table answers it.
    assert count_backends(sidecar.outbound_port, "ratings:9080", 5) == {"ratings-0": 5}
    status, _, _ = send(sidecar.outbound_port, "nothing.example:9080")
    assert status == 404
    assert len(virtual_hosts(sidecar)) == 2


def test_a_cluster_the_route_newly_chooses_is_fetched_on_demand(bookinfo: LocalMesh) -> None:
    sidecar = on_demand_sidecar(bookinfo, "productpage")
    assert count_backends(sidecar.outbound_port, "reviews:9080", 10) == {"reviews-v1": 10}
    assert envoy_clusters(sidecar) == {REVIEWS_V1}
    before = bookinfo.debug.type_state(sidecar.node_id, "vhds")["acked_version"]

    bookinfo.write("vs.yaml", weights(0, 100))
    bookinfo.debug.wait_synced(
        sidecar.node_id, types=ON_DEMAND_TYPES, newer_than={"vhds": before}, timeout=10
    )
    # The v2 cluster was never sent: the first request after the change asks for it.
    assert REVIEWS_V2 not in envoy_clusters(sidecar)
    assert count_backends(sidecar.outbound_port, "reviews:9080", 20) == {"reviews-v2": 20}
    assert REVIEWS_V2 in envoy_clusters(sidecar)


def test_canary_reaches_only_the_sidecars_that_asked_for_the_host(bookinfo: LocalMesh) -> None:
    caller = on_demand_sidecar(bookinfo, "productpage")
    other = on_demand_sidecar(bookinfo, "details")
    full = bookinfo.sidecar(
        "sidecar~127.0.0.1~full.default~default.svc.cluster.local", labels={"app": "full"}
    )
    assert count_backends(caller.outbound_port, "reviews:9080", 5) == {"reviews-v1": 5}
    assert count_backends(other.outbound_port, "ratings:9080", 5) == {"ratings-0": 5}
    assert count_backends(full.outbound_port, "reviews:9080", 5) == {"reviews-v1": 5}
    time.sleep(0.2)  # let the ACKs of the fetches settle
    caller_vhds = bookinfo.debug.type_state(caller.node_id, "vhds")
    other_before = bookinfo.debug.proxy(other.node_id)
    full_rds = bookinfo.debug.type_state(full.node_id, "rds")["acked_version"]
    other_stats = route_stats(other)
    caller_stats = route_stats(caller)

    bookinfo.write("vs.yaml", weights(0, 100))
    after = bookinfo.debug.wait_synced(
        caller.node_id,
        types=ON_DEMAND_TYPES,
        newer_than={"vhds": caller_vhds["acked_version"]},
        timeout=10,
    )
    bookinfo.debug.wait_synced(full.node_id, newer_than={"rds": full_rds}, timeout=10)
    assert count_backends(caller.outbound_port, "reviews:9080", 20) == {"reviews-v2": 20}
    assert count_backends(full.outbound_port, "reviews:9080", 20) == {"reviews-v2": 20}

    # The subscribed sidecar got one VHDS update carrying its one host, and no RDS.
    assert after["rds"]["sent_at"] == bookinfo.debug.type_state(caller.node_id, "rds")["sent_at"]
    assert after["vhds"]["resources"] == 1
    grown = {k: v - caller_stats.get(k, 0) for k, v in route_stats(caller).items() if ".vhds." in k}
    assert any(v > 0 for k, v in grown.items() if k.endswith("update_attempt")), grown
    # The other sidecar (it asked for ratings only) was sent nothing, and Envoy counted no
    # route update of any kind.
    time.sleep(0.5)
    other_after = bookinfo.debug.proxy(other.node_id)
    assert other_before is not None and other_after is not None
    for kind in ("rds", "vhds", "cds", "lds"):
        assert other_after["types"][kind]["sent_at"] == other_before["types"][kind]["sent_at"]
    assert route_stats(other) == other_stats


def test_after_a_control_plane_restart_the_hosts_asked_for_are_followed(
    bookinfo: LocalMesh,
) -> None:
    sidecar = on_demand_sidecar(bookinfo, "productpage")
    assert count_backends(sidecar.outbound_port, "reviews:9080", 5) == {"reviews-v1": 5}
    bookinfo.control_plane.stop()
    bookinfo.control_plane.start()
    # Envoy reconnects, names the host it holds again, and keeps serving it meanwhile.
    states = bookinfo.debug.wait_synced(sidecar.node_id, types=ON_DEMAND_TYPES, timeout=30)
    assert states["vhds"]["subscribed"] == 1
    assert count_backends(sidecar.outbound_port, "reviews:9080", 5) == {"reviews-v1": 5}
    bookinfo.write("vs.yaml", weights(0, 100))
    bookinfo.debug.wait_synced(
        sidecar.node_id,
        types=ON_DEMAND_TYPES,
        newer_than={"vhds": states["vhds"]["acked_version"]},
        timeout=10,
    )
    assert count_backends(sidecar.outbound_port, "reviews:9080", 20) == {"reviews-v2": 20}
