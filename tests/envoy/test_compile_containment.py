"""A resource the compiler fails on is refused alone: every other resource and every proxy
keeps updating, the resource's last good version keeps serving, its status says why; and a
proxy whose updates cannot be built is never reported SYNCED (issue 11, part 2).

The faults are injected into the control plane's process by a test-only ``sitecustomize``
(``compile_faults/``): valid input that the patched compiler raises on.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli.proxy_status import proxy_status
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.support import meshes

V1, V2, RATINGS = "127.0.0.41", "127.0.0.42", "127.0.0.43"
FAULTS = Path(__file__).parent / "compile_faults"


def ratings_vs(route_name: str, header: str) -> str:
    return meshes.virtual_service(
        "ratings",
        f"""
        http:
        - name: {route_name}
          headers: {{response: {{set: {{x-ratings-rule: {header}}}}}}}
          route: [{{destination: {{host: ratings}}}}]
        """,
    )


def reviews_vs(w1: int, w2: int) -> str:
    return meshes.split("reviews", {"v1": w1, "v2": w2})


@pytest.fixture
def faulty(mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalMesh, Sidecar]:
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    port = free_port()
    mesh.backend("reviews-v1", V1, port)
    mesh.backend("reviews-v2", V2, port)
    mesh.backend("ratings-v1", RATINGS, port)
    mesh.write("reviews.yaml", meshes.reviews(V1, V2, target_port=port))
    mesh.write("ratings.yaml", meshes.ratings(RATINGS, target_port=port))
    mesh.write("reviews-vs.yaml", reviews_vs(100, 0))
    mesh.write("ratings-vs.yaml", ratings_vs("good", "first"))
    mesh.start()
    sidecar = mesh.sidecar(
        "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
        labels={"app": "productpage"},
        service_account="productpage",
    )
    return mesh, sidecar


def _status(mesh: LocalMesh, resource: str) -> dict[str, Any]:
    found = {s["resource"]: s for s in mesh.debug.get("/debug/status")}
    return dict(found.get(resource, {}))


def _wait(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.time() + timeout
    value = check()
    while not value and time.time() < deadline:
        time.sleep(0.05)
        value = check()
    return value


def _rule_header(sidecar: Sidecar) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.outbound_port}/", headers={"Host": "ratings:9080"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.headers.get("x-ratings-rule"))


def test_a_resource_that_fails_to_compile_is_refused_alone(
    faulty: tuple[LocalMesh, Sidecar],
) -> None:
    mesh, sidecar = faulty
    assert _rule_header(sidecar) == "first"
    before = str(mesh.debug.type_state(sidecar.node_id, "rds")["acked_version"])

    # The compiler raises on the new ratings VirtualService: refused, with the reason.
    mesh.write("ratings-vs.yaml", ratings_vs("explode", "second"))
    status = _wait(
        lambda: (
            (s := _status(mesh, "VirtualService default/ratings"))
            and any("CP0307" in str(i) for i in s.get("issues", []))
            and s
        )
    )
    assert status, _status(mesh, "VirtualService default/ratings")
    assert status["reconciled"] is False
    message = " ".join(map(str, status["issues"]))
    assert "spec.http[0]" in message and "injected compile fault" in message, message
    log_lines = [ln for ln in mesh.control_plane.log_text().splitlines() if "CP0307" in ln]
    assert log_lines and "VirtualService default/ratings" in log_lines[0], log_lines

    # A later good change to another resource still reaches the proxy...
    mesh.write("reviews-vs.yaml", reviews_vs(0, 100))
    states = mesh.debug.wait_synced(sidecar.node_id, timeout=10, newer_than={"rds": before})
    assert all(states[t]["status"] == "SYNCED" for t in ("cds", "eds", "lds", "rds")), states
    assert count_backends(sidecar.outbound_port, "reviews:9080", 50) == {"reviews-v2": 50}
    # ... while the refused one's last good version keeps serving.
    assert _rule_header(sidecar) == "first"
    assert count_backends(sidecar.outbound_port, "ratings:9080", 20) == {"ratings-v1": 20}

    # Fixing it brings it in.
    mesh.write("ratings-vs.yaml", ratings_vs("fixed", "third"))
    assert _wait(lambda: _rule_header(sidecar) == "third")
    assert _status(mesh, "VirtualService default/ratings")["reconciled"] is True


def test_a_proxy_whose_push_cannot_be_built_is_not_reported_synced(
    faulty: tuple[LocalMesh, Sidecar],
) -> None:
    mesh, sidecar = faulty
    address = f"127.0.0.1:{mesh.debug_port}"
    # A Service no per-resource guard contains: every proxy that sees it fails to compile.
    mesh.write("boom.yaml", meshes.service("boom", 9080))
    state = _wait(
        lambda: (s := mesh.debug.type_state(sidecar.node_id, "rds")).get("status") == "ERROR" and s
    )
    assert state, mesh.debug.type_state(sidecar.node_id, "rds")
    assert "injected compile fault: service boom" in state["error"]["message"]
    out = io.StringIO()
    proxy_status(address, out=out)
    table = out.getvalue()
    assert "SYNCED" not in table.split("Not in sync:")[0].splitlines()[1], table
    assert "ERROR:" in table and "not being updated" in table and "boom" in table, table

    # Removing it: the proxy is updated again and reported SYNCED.
    mesh.remove("boom.yaml")
    states = mesh.debug.wait_synced(sidecar.node_id, timeout=10)
    assert all(states[t]["status"] == "SYNCED" for t in ("cds", "eds", "lds", "rds")), states
    out = io.StringIO()
    proxy_status(address, out=out)
    assert "Not in sync" not in out.getvalue(), out.getvalue()
