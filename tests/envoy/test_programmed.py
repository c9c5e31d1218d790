"""The Programmed verdict with real Envoys (issue 17): a change is Programmed once every proxy
it affects has ACKed it, with the count while one has not; a NACK shows on the resource that
produced what Envoy refused, with Envoy's message and the proxy; `controlplane wait` returns
after the ACKs and fails on a NACK."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes

V1, V2, RATINGS = "127.0.0.41", "127.0.0.42", "127.0.0.43"
# Valid RE2 within Istio's rules, but larger than the regex program size Envoy accepts.
HUGE_REGEX = "/(" + "|".join(f"item{i}" for i in range(60)) + "){1,20}"


def reviews_split(w1: int, w2: int) -> str:
    return meshes.split("reviews", {"v1": w1, "v2": w2})


def ratings_vs(regex: str) -> str:
    return meshes.virtual_service(
        "ratings",
        f"""
        http:
        - match: [{{uri: {{regex: "{regex}"}}}}]
          route: [{{destination: {{host: ratings}}}}]
        - route: [{{destination: {{host: ratings}}}}]
        """,
    )


@pytest.fixture
def canary(mesh: LocalMesh) -> tuple[LocalMesh, list[Sidecar]]:
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.backend("ratings-v1", RATINGS, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port, rule=False))
    mesh.write("ratings.yaml", meshes.ratings(RATINGS, target_port=port))
    mesh.write("dr.yaml", meshes.subsets("reviews"))
    mesh.write("vs.yaml", reviews_split(90, 10))
    mesh.write("ratings-vs.yaml", ratings_vs("/ok/.*"))
    mesh.start()
    sidecars = [
        mesh.sidecar(
            f"sidecar~127.0.0.1~{app}.default~default.svc.cluster.local",
            labels={"app": app},
            service_account=app,
        )
        for app in ("productpage", "details")
    ]
    return mesh, sidecars


def programmed(mesh: LocalMesh, resource: str) -> dict[str, Any]:
    return dict(mesh.debug.get(f"/debug/programmed?resource={resource}"))


def wait_for(mesh: LocalMesh, resource: str, ok: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    last: dict[str, Any] = {}
    while time.time() < deadline:
        last = programmed(mesh, resource)
        if ok(last):
            return last
        time.sleep(0.02)
    raise AssertionError(f"{resource} never got there: {last}")


@pytest.fixture
def stopped() -> Iterator[list[Sidecar]]:
    """Sidecars whose Envoy is paused (SIGSTOP) by the test; resumed at the end."""
    paused: list[Sidecar] = []
    yield paused
    for sidecar in paused:
        assert sidecar.envoy.process is not None
        os.kill(sidecar.envoy.process.pid, signal.SIGCONT)


def rds_acked(mesh: LocalMesh, sidecar: Sidecar) -> str:
    return str(mesh.debug.type_state(sidecar.node_id, "rds")["acked_version"])


def test_weight_change_is_programmed_only_once_every_affected_proxy_acked_it(
    canary: tuple[LocalMesh, list[Sidecar]], stopped: list[Sidecar]
) -> None:
    mesh, (first, second) = canary
    vs = "VirtualService/default/reviews"
    # Both sidecars route to reviews: both are affected (read within the evaluation lag).
    wait_for(mesh, vs, lambda v: v["message"] == "2 of 2 proxies on generation 1")
    before = [rds_acked(mesh, s) for s in (first, second)]

    assert second.envoy.process is not None
    os.kill(second.envoy.process.pid, signal.SIGSTOP)
    stopped.append(second)
    mesh.write("vs.yaml", reviews_split(0, 100))
    pending = wait_for(mesh, vs, lambda v: v["generation"] == 2 and v["reason"] == "Pending")
    # The running proxy ACKs; the paused one cannot: the count says so.
    time.sleep(0.5)
    pending = programmed(mesh, vs)
    assert pending["programmed"] is False and pending["reason"] == "Pending", pending
    assert pending["message"] == "1 of 2 proxies still on generation 1", pending
    assert rds_acked(mesh, first) != before[0]
    assert rds_acked(mesh, second) == before[1]
    # A resource the change does not touch stays Programmed meanwhile.
    assert programmed(mesh, "VirtualService/default/ratings")["programmed"] is True

    os.kill(second.envoy.process.pid, signal.SIGCONT)
    stopped.remove(second)
    done = wait_for(mesh, vs, lambda v: v["programmed"])
    assert done["message"] == "2 of 2 proxies on generation 2", done
    assert done["affected"] == 2 and done["pending"] == 0
    rows = {row["resource"]: row for row in mesh.debug.get("/debug/status")}
    assert rows["VirtualService default/reviews"]["programmed"] == {
        "status": True,
        "reason": "Programmed",
        "message": "2 of 2 proxies on generation 2",
        "generation": 2,
    }
    assert rds_acked(mesh, second) != before[1]
    assert count_backends(second.outbound_port, "reviews:9080", 50) == {"reviews-v2": 50}


def test_nack_appears_on_the_resource_that_produced_it_within_two_seconds(
    canary: tuple[LocalMesh, list[Sidecar]],
) -> None:
    mesh, sidecars = canary
    wait_for(mesh, "VirtualService/default/ratings", lambda v: v["programmed"])
    written = mesh.write("ratings-vs.yaml", ratings_vs(HUGE_REGEX))
    rejected = wait_for(
        mesh, "VirtualService/default/ratings", lambda v: v["reason"] == "Rejected", timeout=5
    )
    assert time.time() - written < 2.0
    message = rejected["message"]
    assert "regex" in message.lower() or "program size" in message, rejected
    assert any(s.node_id in message for s in sidecars), rejected["rejections"]
    assert {r["proxy"] for r in rejected["rejections"]} == {s.node_id for s in sidecars}
    assert all(r["type"] == "RDS" for r in rejected["rejections"]), rejected["rejections"]
    # The reviews VirtualService shares the route table on port 9080 but did not change:
    # it is not blamed, and traffic to it goes on with the last ACKed config.
    reviews = programmed(mesh, "VirtualService/default/reviews")
    assert reviews["reason"] != "Rejected", reviews
    assert set(count_backends(sidecars[0].outbound_port, "reviews:9080", 40)) <= {
        "reviews-v1",
        "reviews-v2",
    }
    with urllib.request.urlopen(f"{mesh.debug.base}/metrics", timeout=2) as response:
        metrics = response.read().decode()
    assert 'controlplane_resource_nacks_total{kind="VirtualService"} 1' in metrics
    # The log says it in the same words, naming the resource.
    lines = [
        ln
        for ln in mesh.control_plane.log_text().splitlines()
        if "VirtualService default/ratings (generation 2): proxy" in ln
    ]
    assert len(lines) == 1 and "program size" in lines[0], lines


def run_wait(mesh: LocalMesh, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "wait",
            *args,
            "--debug-address",
            f"127.0.0.1:{mesh.debug_port}",
            "--timeout",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result, time.time() - started


def test_wait_returns_after_the_acks_and_fails_on_a_nack(
    canary: tuple[LocalMesh, list[Sidecar]],
) -> None:
    mesh, sidecars = canary
    before = [rds_acked(mesh, s) for s in sidecars]
    mesh.write("vs.yaml", reviews_split(50, 50))
    result, _ = run_wait(mesh, "-f", str(mesh.config_dir / "vs.yaml"))
    assert result.returncode == 0, result.stderr
    done_in = float(re.search(r"done in ([\d.]+)s", result.stdout).group(1))  # type: ignore[union-attr]
    assert done_in < 3.0, result.stdout
    # When wait returned, every proxy had ACKed the new route table.
    assert all(rds_acked(mesh, s) != b for s, b in zip(sidecars, before, strict=True))
    assert "VirtualService/default/reviews programmed (generation 2)" in result.stdout
    assert "2 of 2 proxies on generation 2" in result.stdout

    mesh.write("ratings-vs.yaml", ratings_vs(HUGE_REGEX))
    failed, _ = run_wait(mesh, "VirtualService/ratings")
    assert failed.returncode == 1, failed.stdout
    assert "Rejected" in failed.stderr and sidecars[0].node_id.split("~")[2] in failed.stderr
    assert "regex" in failed.stderr.lower() or "program size" in failed.stderr
    # It fails as soon as the NACK is known, not at the timeout (15 s).
    waited = float(re.search(r"after ([\d.]+)s", failed.stderr).group(1))  # type: ignore[union-attr]
    assert waited < 3.0, failed.stderr
