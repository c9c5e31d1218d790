"""GAMMA through a real Envoy sidecar: a Gateway API HTTPRoute (or GRPCRoute) whose parent is
a Service routes the mesh's traffic to that Service, as a VirtualService does, and takes
precedence over one as istiod gives it (a route in the client's own namespace first)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from controlplane.testing.traffic import send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, service_yaml, traffic_mesh, wait_until
from tests.support import meshes

HOST = "reviews:8080"

SPLIT_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-split, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 8080}]
  rules:
  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v1only}}]
    backendRefs: [{name: reviews-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-mesh, value: gamma}]}
    backendRefs: [{name: reviews-v2, port: 8080}]
  - backendRefs:
    - {name: reviews-v1, port: 8080, weight: 75}
    - {name: reviews-v2, port: 8080, weight: 25}
"""

# Older than the route (written first), for the same host: istiod puts a route of the
# client's own namespace before it.
VIRTUAL_SERVICE = meshes.virtual_service(
    "reviews",
    """
  http:
  - route: [{destination: {host: reviews-v3}}]
""",
)


@pytest.fixture(scope="module")
def gamma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {
        "reviews": [Pod("reviews", "127.0.4.40")],
        "reviews-v1": [Pod("reviews-v1", "127.0.4.41")],
        "reviews-v2": [Pod("reviews-v2", "127.0.4.42")],
        "reviews-v3": [Pod("reviews-v3", "127.0.4.43")],
    }
    config = {"vs.yaml": VIRTUAL_SERVICE}
    with traffic_mesh(tmp_path_factory.mktemp("gamma"), services, config) as mesh:
        assert wait_until(lambda: served_by(mesh) == "reviews-v3", timeout=15)
        mesh.mesh.write("route.yaml", SPLIT_ROUTE)
        assert wait_until(lambda: served_by(mesh, "/v1only") == "reviews-v1", timeout=15)
        yield mesh


def served_by(mesh: TrafficMesh, path: str = "/", **kwargs: object) -> str:
    status, _, body = send(mesh.port, HOST, path, **kwargs)  # type: ignore[arg-type]
    if status != 200:
        return f"status {status}"
    return str(json.loads(body)["name"])


def test_an_httproute_on_a_service_splits_mesh_traffic_by_weight(gamma: TrafficMesh) -> None:
    seen = Counter(served_by(gamma) for _ in range(400))
    assert set(seen) == {"reviews-v1", "reviews-v2"}, seen
    share = seen["reviews-v1"] / 400
    # 75/25: the binomial standard deviation at n=400 is about 2.2 points.
    assert 0.65 <= share <= 0.85, seen


def test_a_header_match_of_the_route_picks_its_backend(gamma: TrafficMesh) -> None:
    jason = Counter(served_by(gamma, headers={"end-user": "jason"}) for _ in range(30))
    assert jason == {"reviews-v2": 30}


def test_path_prefix_matches_whole_segments(gamma: TrafficMesh) -> None:
    assert served_by(gamma, "/v1only/page") == "reviews-v1"
    # /v1onlyx is not under /v1only: it falls to the weighted rule (never only v1 in 40).
    seen = Counter(served_by(gamma, "/v1onlyx") for _ in range(40))
    assert "reviews-v2" in seen, seen


def test_the_routes_filters_rewrite_the_prefix_and_set_a_header(gamma: TrafficMesh) -> None:
    status, _, body = send(gamma.port, HOST, "/old/page?x=1")
    seen = json.loads(body)
    assert status == 200 and seen["name"] == "reviews-v2"
    assert seen["path"] == "/new/page?x=1"
    assert seen["headers"]["x-mesh"] == "gamma"


def test_the_route_in_the_clients_namespace_wins_over_an_older_virtual_service(
    gamma: TrafficMesh,
) -> None:
    # The VirtualService (to v3) was accepted first and alone served v3 (the fixture saw it).
    seen = Counter(served_by(gamma) for _ in range(40))
    assert "reviews-v3" not in seen, seen


def test_for_a_client_of_another_namespace_the_older_virtual_service_wins(
    gamma: TrafficMesh,
) -> None:
    # The route is the producer's (the Service's namespace) but newer: for a client in
    # "other", istiod orders it with the VirtualServices by age, and the older one wins.
    other = gamma.mesh.sidecar(
        "sidecar~127.0.0.2~client.other~other.svc.cluster.local", namespace="other"
    )
    status, _, body = send(other.outbound_port, "reviews.default:8080", "/v1only")
    assert status == 200 and json.loads(body)["name"] == "reviews-v3"


def test_removing_the_route_gives_the_host_back_to_the_virtual_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    services = {
        "reviews": [Pod("reviews", "127.0.4.44")],
        "reviews-v1": [Pod("reviews-v1", "127.0.4.45")],
        "reviews-v2": [Pod("reviews-v2", "127.0.4.46")],
        "reviews-v3": [Pod("reviews-v3", "127.0.4.47")],
    }
    config = {"vs.yaml": VIRTUAL_SERVICE, "route.yaml": SPLIT_ROUTE}
    with traffic_mesh(tmp_path_factory.mktemp("gamma-remove"), services, config) as mesh:
        assert wait_until(lambda: served_by(mesh, "/v1only") == "reviews-v1", timeout=15)
        mesh.mesh.remove("route.yaml")
        assert wait_until(lambda: served_by(mesh, "/v1only") == "reviews-v3", timeout=15)


# ---- GRPCRoute on a Service, to real gRPC servers -----------------------------------------

GRPC_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: demo.Echo, method: Ping}}]
    backendRefs: [{name: echo-v2, port: 9090}]
  - backendRefs: [{name: echo-v1, port: 9090}]
"""


def _grpc_server(name: str, address: str) -> grpc.Server:
    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "demo.Echo",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(answer),
            "Pong": grpc.unary_unary_rpc_method_handler(answer),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    return server


def test_a_grpcroute_on_a_service_routes_grpc_methods(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from controlplane.testing.mesh import LocalMesh
    from controlplane.testing.ports import free_port
    from tests.envoy.traffic_mesh import CLIENT

    target = free_port()
    servers = [
        _grpc_server("echo-v1", f"127.0.4.51:{target}"),
        _grpc_server("echo-v2", f"127.0.4.52:{target}"),
    ]
    mesh = LocalMesh(tmp_path_factory.mktemp("gamma-grpc"))
    try:
        for name, ip in (
            ("echo", "127.0.4.50"),
            ("echo-v1", "127.0.4.51"),
            ("echo-v2", "127.0.4.52"),
        ):
            text = service_yaml(name, 9090, target, [Pod(name, ip)])
            mesh.write(f"svc-{name}.yaml", text.replace("name: http,", "name: grpc,"))
        mesh.write("route.yaml", GRPC_ROUTE)
        mesh.start()
        sidecar = mesh.sidecar(CLIENT, labels={"app": "client"}, service_account="client")
        channel = grpc.insecure_channel(
            f"127.0.0.1:{sidecar.outbound_port}",
            options=[("grpc.default_authority", "echo:9090")],
        )

        def call(method: str) -> str:
            try:
                answer = channel.unary_unary(f"/demo.Echo/{method}")(b"", timeout=5)
            except grpc.RpcError as exc:
                return f"error {exc.code()}"
            return bytes(answer).decode()

        assert wait_until(lambda: call("Ping") == "echo-v2", timeout=15), call("Ping")
        assert Counter(call("Ping") for _ in range(10)) == {"echo-v2": 10}
        assert Counter(call("Pong") for _ in range(10)) == {"echo-v1": 10}
        channel.close()
    finally:
        mesh.stop()
        for server in servers:
            server.stop(0)
