"""Two VirtualServices for one host: the older wins, as in istiod (creation time; in file mode
the time first seen, kept across restarts), and the message names the winner and the loser."""

from __future__ import annotations

import time

from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes

V1, V2 = "127.0.0.21", "127.0.0.22"


def claim(name: str, subset: str) -> str:
    return meshes.virtual_service(
        "reviews", f"http: [{{route: [{{destination: {{host: reviews, subset: {subset}}}}}]}}]",
        name=name,
    )  # fmt: skip


def test_a_newer_virtual_service_whose_name_sorts_first_does_not_take_the_host(
    mesh: LocalMesh,
) -> None:
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port, rule=False))
    mesh.write("dr.yaml", meshes.subsets("reviews"))
    mesh.write("zeta.yaml", claim("zeta", "v1"))
    mesh.start()
    sidecar = mesh.sidecar(
        "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
        labels={"app": "productpage"},
        service_account="productpage",
    )
    assert count_backends(sidecar.outbound_port, "reviews:9080", 50) == {"reviews-v1": 50}

    time.sleep(1.1)  # the newer one is seen a second later (Kubernetes keeps seconds)
    mesh.write("alpha.yaml", claim("alpha", "v2"))
    needle = "ConflictingVirtualServiceHosts] alpha.yaml"
    deadline = time.time() + 10
    while needle not in mesh.control_plane.log_text() and time.time() < deadline:
        time.sleep(0.05)
    [line] = [ln for ln in mesh.control_plane.log_text().splitlines() if needle in ln]
    # The loser is the resource reported; the winner is named as the older one.
    assert "VirtualService default/alpha: spec.hosts[0]" in line, line
    assert "also claimed by the older VirtualService default/zeta" in line, line
    assert line.rstrip().endswith("else the oldest: default/zeta)"), line
    assert "default/zeta" not in line.split("VirtualService default/alpha")[0]
    time.sleep(0.5)  # past the debounce: a push, if any, has happened
    assert count_backends(sidecar.outbound_port, "reviews:9080", 100) == {"reviews-v1": 100}

    # A restart keeps the order (the time first seen is kept in the state directory).
    mesh.control_plane.stop()
    mesh.control_plane.start()
    mesh.debug.wait_synced(sidecar.node_id, timeout=30)
    assert count_backends(sidecar.outbound_port, "reviews:9080", 100) == {"reviews-v1": 100}
    status = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    assert "default/zeta" in str(status["VirtualService default/alpha"])
    assert "CP0303" not in str(status["VirtualService default/zeta"])
