"""A GRPCRoute through a real gateway Envoy to real grpcio servers (file mode): service and
method matches pick the backend; a method no rule matches is not routed (UNIMPLEMENTED)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from controlplane.testing.mesh import GatewayProxy, LocalMesh
from controlplane.testing.ports import free_port
from tests.envoy.test_gatewayapi import GW_LABELS, edge_gateway, gateway_api
from tests.support import meshes

GRPC_V1, GRPC_V2 = "127.0.0.71", "127.0.0.72"
HOST = "grpc.example.com"

ROUTE = gateway_api(
    "GRPCRoute",
    "echo",
    f"""
    parentRefs: [{{name: edge}}]
    hostnames: [{HOST}]
    rules:
    - matches: [{{method: {{service: demo.Echo, method: Shout}}}}]
      backendRefs: [{{name: grpc-v2, port: 9000}}]
    - matches: [{{method: {{service: demo.Echo}}}}]
      backendRefs: [{{name: grpc-v1, port: 9000}}]
    """,
)


def start_server(name: str, host: str, port: int) -> grpc.Server:
    """A gRPC server answering every method of demo.Echo with ``<name>:<method>:<request>``
    (raw bytes: no generated code needed)."""

    def handler(method: str) -> grpc.RpcMethodHandler:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            return f"{name}:{method}:".encode() + request

        return grpc.unary_unary_rpc_method_handler(answer)

    generic = grpc.method_handlers_generic_handler(
        "demo.Echo", {"Say": handler("Say"), "Shout": handler("Shout")}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((generic,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


@dataclass
class GrpcEdge:
    mesh: LocalMesh
    gateway: GatewayProxy
    port: int

    def call(self, method: str, payload: bytes = b"hi") -> bytes:
        # The :authority is the route's hostname; the gateway listens on loopback.
        with grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.default_authority", HOST)]
        ) as channel:
            rpc = channel.unary_unary(f"/demo.Echo/{method}")
            answer: bytes = rpc(payload, timeout=5)
            return answer


@pytest.fixture(scope="module")
def grpc_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcEdge]:
    mesh = LocalMesh(tmp_path_factory.mktemp("gwapi-grpc"))
    servers: list[grpc.Server] = []
    try:
        target = free_port()
        servers = [start_server("v1", GRPC_V1, target), start_server("v2", GRPC_V2, target)]
        grpc_port = [{"name": "grpc", "port": 9000, "targetPort": target}]
        mesh.write(
            "backends.yaml",
            meshes.join(
                meshes.service("grpc-v1", ports=grpc_port),
                meshes.pod("grpc-v1", GRPC_V1, app="grpc-v1"),
                meshes.service("grpc-v2", ports=grpc_port),
                meshes.pod("grpc-v2", GRPC_V2, app="grpc-v2"),
            ),
        )
        port = free_port()
        mesh.write("gateway.yaml", edge_gateway(port))
        mesh.write("route.yaml", ROUTE)
        mesh.start()
        proxy = mesh.gateway("edge", namespace="default", labels=GW_LABELS)
        yield GrpcEdge(mesh, proxy, port)
    finally:
        mesh.stop()
        for server in servers:
            server.stop(grace=None)


def test_a_grpc_route_sends_a_method_to_its_backend(grpc_edge: GrpcEdge) -> None:
    assert grpc_edge.call("Shout") == b"v2:Shout:hi"
    assert grpc_edge.call("Say") == b"v1:Say:hi"


def test_the_grpc_route_status_is_accepted(grpc_edge: GrpcEdge) -> None:
    status = grpc_edge.mesh.debug.get("/debug/gateway_api_status")["GRPCRoute default/echo"]
    conditions = {c["type"]: c["status"] for c in status["parents"][0]["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}


def test_a_service_no_rule_matches_is_not_routed(grpc_edge: GrpcEdge) -> None:
    with grpc.insecure_channel(
        f"127.0.0.1:{grpc_edge.port}", options=[("grpc.default_authority", HOST)]
    ) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/other.Service/Say")(b"x", timeout=5)
    assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE)
