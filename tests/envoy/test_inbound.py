"""Local-mode inbound through real Envoy: a sidecar whose workload a Service selects listens on
the workload's own address and forwards to its app on a separate address, so several sidecars
share one machine without colliding."""

from __future__ import annotations

import http.client
import json

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, count_echo_backends
from controlplane.testing.traffic import count_backends

POD_V1, APP_V1 = "127.0.5.10", "127.0.5.110"
POD_V2, APP_V2 = "127.0.5.11", "127.0.5.111"
CLIENT = "sidecar~127.0.5.1~productpage.default~default.svc.cluster.local"


def reviews_yaml(port: int, tcp_port: int, with_v2: bool = True) -> str:
    text = f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: reviews, namespace: default}}
    spec:
      selector: {{app: reviews}}
      ports:
      - {{name: http, port: 9080, targetPort: {port}}}
      - {{name: tcp-admin, port: 9090, targetPort: {tcp_port}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: reviews-v1, namespace: default, labels: {{app: reviews, version: v1}}}}
    status: {{podIP: {POD_V1}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: reviews-v2, namespace: default, labels: {{app: reviews, version: v2}}}}
    status: {{podIP: {POD_V2}}}
    """
    return text if with_v2 else text.rsplit("---", 1)[0]


def workload_sidecar(mesh: LocalMesh, pod: str, app: str, version: str) -> Sidecar:
    return mesh.sidecar(
        f"sidecar~{pod}~reviews-{version}.default~default.svc.cluster.local",
        labels={"app": "reviews", "version": version},
        service_account="reviews",
        app_address=app,
    )


def inbound_requests(sidecar: Sidecar, port: int) -> int:
    return sidecar.envoy.stat(f"cluster.inbound|{port}||.upstream_rq_total")


def test_request_reaches_the_app_through_the_sidecar_listening_on_the_pod_address(
    mesh: LocalMesh,
) -> None:
    port, tcp_port = free_port(), free_port()
    app = mesh.backend("reviews-v1-app", APP_V1, port)
    mesh.write("reviews.yaml", reviews_yaml(port, tcp_port, with_v2=False))
    mesh.start()
    server = workload_sidecar(mesh, POD_V1, APP_V1, "v1")
    client = mesh.sidecar(CLIENT, labels={"app": "productpage"})

    listeners = server.envoy.admin_json("/listeners?format=json")
    names = {entry["name"] for entry in listeners["listener_statuses"]}
    assert f"{POD_V1}_{port}" in names, names

    # Straight to the pod address: only the inbound listener is there (the app is elsewhere).
    conn = http.client.HTTPConnection(POD_V1, port, timeout=5)
    conn.request("GET", "/direct", headers={"Host": "anything"})
    reply = conn.getresponse()
    assert reply.status == 200 and json.loads(reply.read())["name"] == "reviews-v1-app"
    conn.close()
    app.reset()
    counts = count_backends(client.outbound_port, "reviews:9080", 50)
    assert counts == {"reviews-v1-app": 50}, counts
    assert app.count() == 50
    assert inbound_requests(server, port) == 51
    seen = app.requests[-1]
    # The request went through the inbound HCM of the server sidecar.
    assert seen.headers.get("x-forwarded-proto") == "http"
    assert "x-request-id" in seen.headers


def test_two_local_sidecars_share_a_target_port_without_colliding(mesh: LocalMesh) -> None:
    port, tcp_port = free_port(), free_port()
    mesh.backend("reviews-v1-app", APP_V1, port)
    mesh.backend("reviews-v2-app", APP_V2, port)
    mesh.write("reviews.yaml", reviews_yaml(port, tcp_port))
    mesh.start()
    v1 = workload_sidecar(mesh, POD_V1, APP_V1, "v1")
    v2 = workload_sidecar(mesh, POD_V2, APP_V2, "v2")
    client = mesh.sidecar(CLIENT, labels={"app": "productpage"})

    counts = count_backends(client.outbound_port, "reviews:9080", 200)
    assert set(counts) == {"reviews-v1-app", "reviews-v2-app"}, counts
    assert counts["reviews-v1-app"] > 40 and counts["reviews-v2-app"] > 40, counts
    assert inbound_requests(v1, port) == counts["reviews-v1-app"]
    assert inbound_requests(v2, port) == counts["reviews-v2-app"]


def test_tcp_service_port_is_proxied_inbound_to_the_app(mesh: LocalMesh) -> None:
    port, tcp_port, local_tcp = free_port(), free_port(), free_port()
    echo = TcpEchoBackend("reviews-v1-tcp", APP_V1, tcp_port).start()
    try:
        mesh.write("reviews.yaml", reviews_yaml(port, tcp_port, with_v2=False))
        mesh.start()
        server = workload_sidecar(mesh, POD_V1, APP_V1, "v1")
        client = mesh.sidecar(
            CLIENT, labels={"app": "productpage"}, tcp_ports=f"reviews:9090={local_tcp}"
        )
        counts = count_echo_backends("127.0.0.1", local_tcp, 20)
        assert counts == {"reviews-v1-tcp": 20}, counts
        assert echo.connections == 20
        stat = f"cluster.inbound|{tcp_port}||.upstream_cx_total"
        assert server.envoy.stat(stat) == 20
        config = json.loads(server.envoy.admin("/config_dump?resource=dynamic_listeners"))
        assert f"{POD_V1}_{tcp_port}" in json.dumps(config)
        assert (
            client.envoy.stat(
                "cluster.outbound|9090||reviews.default.svc.cluster.local.upstream_cx_total"
            )
            == 20
        )
    finally:
        echo.stop()
