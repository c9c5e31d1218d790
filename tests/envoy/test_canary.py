"""A real Envoy follows VirtualService weights written to files (issue: the file-mode slice)."""

from __future__ import annotations

import time

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.support import meshes

V1, V2 = "127.0.0.21", "127.0.0.22"


def virtual_service(w1: int, w2: int, subset2: str = "v2", api: str = "v1") -> str:
    return meshes.split(
        "reviews", {"v1": w1, subset2: w2}, api_version=f"networking.istio.io/{api}"
    )


# Valid YAML and schema, but the first route's regex does not compile.
INVALID_REGEX_VS = meshes.resource(
    "VirtualService",
    "reviews",
    """
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "/api/(unclosed"}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v2}}]
""",
)


@pytest.fixture
def canary(mesh: LocalMesh) -> tuple[LocalMesh, Sidecar]:
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port, rule=False))
    mesh.write("dr.yaml", meshes.subsets("reviews"))
    mesh.write("vs.yaml", virtual_service(90, 10))
    mesh.start()
    sidecar = mesh.sidecar(
        "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
        labels={"app": "productpage"},
        service_account="productpage",
    )
    return mesh, sidecar


def share(counts: dict[str, int], name: str) -> float:
    return 100.0 * counts.get(name, 0) / sum(counts.values())


def rds_version(mesh: LocalMesh, sidecar: Sidecar) -> str:
    return str(mesh.debug.type_state(sidecar.node_id, "rds")["acked_version"])


def test_ninety_ten_split_is_observed_within_four_points(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 1000)
    assert sum(counts.values()) == 1000
    assert set(counts) <= {"reviews-v1", "reviews-v2"}, counts
    assert abs(share(counts, "reviews-v2") - 10) <= 4, counts


def test_weight_edit_is_acked_and_traffic_follows(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    written = mesh.write("vs.yaml", virtual_service(0, 100))
    states = mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    assert states["rds"]["acked_at"] - written < 2.0
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 200)
    assert counts == {"reviews-v2": 200}


def test_weights_are_relative_not_percentages(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    mesh.write("vs.yaml", virtual_service(1, 3))  # 25% / 75%
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 1000)
    assert abs(share(counts, "reviews-v2") - 75) <= 5, counts


@pytest.mark.parametrize(
    ("broken", "reported"),
    [
        (virtual_service(110, -10), "spec.http[0].route[1].weight: must not be negative"),
        (virtual_service(0, 0), "spec.http[0].route: the weights of all destinations are 0"),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: [unclosed\n",
            "[CP0101 InvalidYAML] vs.yaml:",
        ),
        (INVALID_REGEX_VS, "spec.http[0].match[0].uri.regex: invalid regex"),
    ],
    ids=["negative weight", "weights total zero", "unparsable YAML", "invalid regex"],
)
def test_broken_virtual_service_leaves_traffic_on_previous_split(
    canary: tuple[LocalMesh, Sidecar], broken: str, reported: str
) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    mesh.write("vs.yaml", broken)
    deadline = time.time() + 5
    while reported not in mesh.control_plane.log_text() and time.time() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in mesh.control_plane.log_text().splitlines() if reported in ln]
    assert len(lines) == 1 and "vs.yaml" in lines[0], mesh.control_plane.log_tail()
    time.sleep(0.3)  # more than the debounce: a push, if any, would have happened
    assert rds_version(mesh, sidecar) == before
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 500)
    assert abs(share(counts, "reviews-v2") - 10) <= 6, counts
    # Fixing the file brings the resource back.
    mesh.write("vs.yaml", virtual_service(50, 50))
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 400)
    assert abs(share(counts, "reviews-v2") - 50) <= 10, counts


def test_negative_weight_error_names_file_resource_and_field(
    canary: tuple[LocalMesh, Sidecar],
) -> None:
    mesh, _ = canary
    mesh.write("vs.yaml", virtual_service(110, -10))
    deadline = time.time() + 5
    needle = "spec.http[0].route[1].weight: must not be negative"
    while needle not in mesh.control_plane.log_text() and time.time() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in mesh.control_plane.log_text().splitlines() if needle in ln]
    assert lines, mesh.control_plane.log_tail()
    assert "vs.yaml:" in lines[0] and "VirtualService default/reviews" in lines[0]
    status = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    assert status["VirtualService default/reviews"]["accepted"] is False


def test_route_to_undefined_subset_keeps_previous_route(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    mesh.write("vs.yaml", virtual_service(50, 50, subset2="v3"))
    deadline = time.time() + 5
    while (
        "ReferencedSubsetNotFound" not in mesh.control_plane.log_text() and time.time() < deadline
    ):
        time.sleep(0.05)
    assert "subset 'v3'" in mesh.control_plane.log_text()
    time.sleep(0.3)
    assert rds_version(mesh, sidecar) == before
    status = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    assert status["VirtualService default/reviews"]["reconciled"] is False
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 300)
    assert set(counts) <= {"reviews-v1", "reviews-v2"} and counts["reviews-v1"] > 200, counts


def test_adding_the_missing_subset_brings_the_route_in(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    mesh.write("vs.yaml", virtual_service(0, 100, subset2="v3"))
    before = rds_version(mesh, sidecar)
    v3_on_v2 = {"v1": "v1", "v2": "v2", "v3": "v2"}  # v3 selects the v2 pod
    mesh.write("dr.yaml", meshes.subsets("reviews", v3_on_v2))
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    assert count_backends(sidecar.outbound_port, "reviews:9080", 50) == {"reviews-v2": 50}
    status = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    assert status["VirtualService default/reviews"]["reconciled"] is True


def test_deleting_the_virtual_service_falls_back_to_the_default_route(
    canary: tuple[LocalMesh, Sidecar],
) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    mesh.remove("vs.yaml")
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    counts = count_backends(sidecar.outbound_port, "reviews:9080", 400)
    # The default route sends to every pod of the service.
    assert counts["reviews-v1"] > 80 and counts["reviews-v2"] > 80, counts


@pytest.mark.parametrize(
    "host",
    [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
    ],
)
def test_short_and_full_host_names_reach_the_service(
    canary: tuple[LocalMesh, Sidecar], host: str
) -> None:
    _, sidecar = canary
    status, headers, _ = send(sidecar.outbound_port, host)
    assert status == 200 and headers["x-backend"] in ("reviews-v1", "reviews-v2")


def test_unknown_host_gets_404_from_envoy(canary: tuple[LocalMesh, Sidecar]) -> None:
    _, sidecar = canary
    status, headers, _ = send(sidecar.outbound_port, "ratings:9080")
    assert status == 404 and "x-backend" not in headers


def test_older_api_versions_are_read_the_same(canary: tuple[LocalMesh, Sidecar]) -> None:
    mesh, sidecar = canary
    before = rds_version(mesh, sidecar)
    mesh.write("vs.yaml", virtual_service(0, 100, api="v1alpha3"))
    mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    assert count_backends(sidecar.outbound_port, "reviews:9080", 50) == {"reviews-v2": 50}
