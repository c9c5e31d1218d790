"""Through a real Envoy: a Sidecar resource scopes the client's proxy. What Envoy was sent
(its clusters and virtual hosts) shrinks to the hosts the Sidecar imports; a request to a
hidden host finds no route, a visible one still passes; removing the Sidecar restores both."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, traffic_mesh, wait_until

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"

SIDECAR = f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client-scope, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: client}}}}
  egress:
  - hosts: ["./{REVIEWS}", "istio-system/*"]
"""


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {
        "reviews": [Pod("reviews-v1", "127.0.4.41")],
        "ratings": [Pod("ratings-v1", "127.0.4.42")],
    }
    with traffic_mesh(tmp_path_factory.mktemp("sidecar-scope"), services, {}) as mesh:
        yield mesh


def _status(mesh: TrafficMesh, host: str) -> int:
    status, _, _ = send(mesh.port, f"{host}:8080")
    return status


def _served_by(mesh: TrafficMesh, host: str) -> str:
    status, _, body = send(mesh.port, f"{host}:8080")
    assert status == 200, (status, body)
    return str(json.loads(body)["name"])


def _sent(mesh: TrafficMesh) -> tuple[set[str], set[str]]:
    """The outbound cluster names and virtual host names Envoy holds."""
    clusters: Any = mesh.sidecar.envoy.admin_json("/config_dump?resource=dynamic_active_clusters")
    names = {c["cluster"]["name"] for c in clusters["configs"]}
    routes: Any = mesh.sidecar.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    hosts = {
        vh["name"]
        for config in routes["configs"]
        for vh in config["route_config"].get("virtual_hosts", [])
    }
    return {n for n in names if n.startswith("outbound|")}, hosts


def test_a_sidecar_hides_a_host_from_the_proxy_and_its_traffic_is_refused(
    scoped: TrafficMesh,
) -> None:
    assert _served_by(scoped, "ratings") == "ratings-v1"  # no Sidecar yet: everything
    clusters, _ = _sent(scoped)
    assert f"outbound|8080||{RATINGS}" in clusters

    scoped.mesh.write("sidecar.yaml", SIDECAR)
    assert wait_until(lambda: _status(scoped, "ratings") == 404, timeout=15)

    clusters, hosts = _sent(scoped)
    assert clusters == {f"outbound|8080||{REVIEWS}"}
    assert f"{REVIEWS}:8080" in hosts
    assert not any(h.startswith(RATINGS) for h in hosts)
    assert _served_by(scoped, "reviews") == "reviews-v1"  # the imported host still passes
    assert _status(scoped, RATINGS) == 404  # by any name

    scoped.mesh.remove("sidecar.yaml")
    assert wait_until(lambda: _status(scoped, "ratings") == 200, timeout=15)
    clusters, _ = _sent(scoped)
    assert f"outbound|8080||{RATINGS}" in clusters


POD, APP = "127.0.4.45", "127.0.4.145"


def test_a_sidecar_ingress_listener_replaces_the_service_ports_and_forwards_to_its_endpoint(
    mesh: LocalMesh,
) -> None:
    service_port, listen_port, app_port = free_port(), free_port(), free_port()
    mesh.backend("web-app", APP, app_port)
    mesh.write(
        "web.yaml",
        f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {service_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
status: {{podIP: {POD}}}
""",
    )
    mesh.start()
    server = mesh.sidecar(
        f"sidecar~{POD}~web-1.default~default.svc.cluster.local",
        labels={"app": "web"},
        app_address=APP,
    )

    def listeners() -> set[str]:
        found: Any = server.envoy.admin_json("/listeners?format=json")
        return {entry["name"] for entry in found["listener_statuses"]}

    assert f"{POD}_{service_port}" in listeners()  # from the Service, as before

    mesh.write(
        "sidecar.yaml",
        f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: web-ingress, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: web}}}}
  ingress:
  - port: {{number: {listen_port}, protocol: HTTP, name: http}}
    defaultEndpoint: "0.0.0.0:{app_port}"
""",
    )
    assert wait_until(lambda: f"{POD}_{listen_port}" in listeners(), timeout=15)
    assert f"{POD}_{service_port}" not in listeners()  # the ingress listeners replace them
    conn = http.client.HTTPConnection(POD, listen_port, timeout=5)
    conn.request("GET", "/through-ingress", headers={"Host": "web"})
    reply = conn.getresponse()
    assert reply.status == 200 and json.loads(reply.read())["name"] == "web-app"
    conn.close()
    assert server.envoy.stat(f"cluster.inbound|{listen_port}||.upstream_rq_total") == 1
