"""CUSTOM AuthorizationPolicies through a real Envoy, with external authorization servers
written here on loopback (a small HTTP one and a gRPC ``envoy.service.auth.v3.Authorization``
one), named by the mesh config's ``extensionProviders`` in ``mesh.yaml``: what the server
allows reaches the app, what it denies gets the status and headers it set, a provider that is
down fails closed (``failOpen: true`` passes), and a request the CUSTOM rules do not match
never reaches the authorizer."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.tcp_echo import TcpEchoBackend, echo_once
from tests.envoy.traffic_mesh import wait_until

POD, APP = "127.0.6.10", "127.0.6.110"
HTTP_AUTHZ, GRPC_AUTHZ, DOWN_AUTHZ = "127.0.6.20", "127.0.6.21", "127.0.6.22"


class HttpAuthorizer:
    """Allows a request with ``x-user: alice`` (telling the app who it is), denies anything
    else with 401, a reason header and a body."""

    def __init__(self, host: str, port: int) -> None:
        self.checked: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.checked.append((self.path, headers))
                if headers.get("x-user") == "alice":
                    self.send_response(200)
                    self.send_header("x-authz-user", "alice")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = b"denied by the http authorizer"
                self.send_response(401)
                self.send_header("x-authz-reason", "unknown-user")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows ``x-user: alice`` (adding a header for the app), denies others with 403."""

    def __init__(self, host: str, port: int) -> None:
        self.checked: list[dict[str, str]] = []
        self.tcp_checked = 0
        self.allow_tcp = False
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"{host}:{port}")
        self.server.start()

    def Check(  # noqa: N802 (the gRPC method's name)
        self, request: external_auth_pb2.CheckRequest, context: object
    ) -> external_auth_pb2.CheckResponse:
        if not request.attributes.request.HasField("http"):  # a TCP connection
            self.tcp_checked += 1
            code = code_pb2.OK if self.allow_tcp else code_pb2.PERMISSION_DENIED
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))
        headers = dict(request.attributes.request.http.headers)
        self.checked.append(headers)
        if headers.get("x-user") == "alice":
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key="x-grpc-authz", value="ok")
                        )
                    ]
                ),
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key="x-grpc-reason", value="not-alice")
                    )
                ],
                body="denied by the grpc authorizer",
            ),
        )

    def stop(self) -> None:
        self.server.stop(None)


def mesh_yaml(http_port: int, grpc_port: int) -> str:
    del http_port, grpc_port  # the Services map the ports
    return """
    extensionProviders:
    - name: authz-http
      envoyExtAuthzHttp:
        service: foo/authz-http.foo.svc.cluster.local
        port: 8000
        timeout: 2s
        pathPrefix: /check
        includeRequestHeadersInCheck: [x-user]
        headersToUpstreamOnAllow: [x-authz-user]
        headersToDownstreamOnDeny: [x-authz-reason]
    - name: authz-grpc
      envoyExtAuthzGrpc:
        service: authz-grpc.foo.svc.cluster.local
        port: 9000
        timeout: 2s
    - name: authz-down
      envoyExtAuthzHttp: {service: authz-down.foo.svc.cluster.local, port: 8000, timeout: 1s}
    - name: authz-down-open
      envoyExtAuthzHttp:
        service: authz-down.foo.svc.cluster.local
        port: 8000
        timeout: 1s
        failOpen: true
    """


def services_yaml(
    app_port: int, http_port: int, grpc_port: int, down_port: int, tcp_port: int
) -> str:
    def service(name: str, port: int, target: int, ip: str, port_name: str = "http") -> str:
        return f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: {name}, namespace: foo}}
    spec:
      selector: {{app: {name}}}
      ports: [{{name: {port_name}, port: {port}, targetPort: {target}}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: foo, labels: {{app: {name}}}}}
    status: {{podIP: {ip}}}
    ---"""

    return (
        service("authz-http", 8000, http_port, HTTP_AUTHZ)
        + service("authz-grpc", 9000, grpc_port, GRPC_AUTHZ, "grpc")
        + service("authz-down", 8000, down_port, DOWN_AUTHZ)
        + f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: reviews, namespace: default}}
    spec:
      selector: {{app: reviews}}
      ports:
      - {{name: http, port: 9080, targetPort: {app_port}}}
      - {{name: tcp-echo, port: 9090, targetPort: {tcp_port}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: reviews-v1, namespace: default, labels: {{app: reviews}}}}
    status: {{podIP: {POD}}}
    """
    )


def custom_policy(provider: str, paths: str = "[/protected/*]") -> str:
    return f"""
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: ext-authz, namespace: default}}
    spec:
      selector: {{matchLabels: {{app: reviews}}}}
      action: CUSTOM
      provider: {{name: {provider}}}
      rules:
      - to: [{{operation: {{paths: {paths}}}}}]
    """


class World:
    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self.app_port = free_port()
        http_port, grpc_port, down_port = free_port(), free_port(), free_port()
        self.app = mesh.backend("reviews-app", APP, self.app_port)
        self.tcp_port = free_port()
        self.echo = TcpEchoBackend("reviews-tcp", APP, self.tcp_port).start()
        self.http = HttpAuthorizer(HTTP_AUTHZ, http_port)
        self.grpc = GrpcAuthorizer(GRPC_AUTHZ, grpc_port)
        mesh.write("mesh.yaml", mesh_yaml(http_port, grpc_port))
        mesh.write(
            "services.yaml",
            services_yaml(self.app_port, http_port, grpc_port, down_port, self.tcp_port),
        )
        mesh.write("policy.yaml", custom_policy("authz-http"))
        mesh.start()
        self.sidecar: Sidecar = mesh.sidecar(
            f"sidecar~{POD}~reviews-v1.default~default.svc.cluster.local",
            labels={"app": "reviews"},
            service_account="reviews",
            app_address=APP,
        )

    def call(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(POD, self.app_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": "reviews", **(headers or {})})
            reply = conn.getresponse()
            body = reply.read()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body
        finally:
            conn.close()

    def use(self, provider: str) -> None:
        """Point the CUSTOM policy at ``provider`` and wait until the sidecar has it."""
        self.mesh.write("policy.yaml", custom_policy(provider))
        assert wait_until(lambda: self._provider_in_effect(provider), timeout=15), provider

    def _provider_in_effect(self, provider: str) -> bool:
        dump = self.sidecar.envoy.admin("/config_dump?resource=dynamic_listeners")
        return f"istio-ext-authz-{provider}-ns[default]" in dump


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    mesh = LocalMesh(tmp_path_factory.mktemp("ext-authz"))
    found: World | None = None
    try:
        found = World(mesh)
        yield found
    finally:
        mesh.stop()
        if found is not None:
            found.http.stop()
            found.grpc.stop()
            found.echo.stop()


def test_http_provider_allows_and_the_app_sees_the_authorizers_header(world: World) -> None:
    world.use("authz-http")
    world.http.checked.clear()
    status, _, _ = world.call("/protected/data", {"x-user": "alice"})
    assert status == 200
    path, headers = world.http.checked[-1]
    assert path == "/check/protected/data"  # pathPrefix, then the request's path
    assert headers["x-user"] == "alice"
    assert world.app.requests[-1].headers.get("x-authz-user") == "alice"


def test_http_provider_denies_with_its_status_headers_and_body(world: World) -> None:
    world.use("authz-http")
    served = world.app.count()
    status, headers, body = world.call("/protected/data", {"x-user": "mallory"})
    assert status == 401
    assert headers.get("x-authz-reason") == "unknown-user"
    assert body == b"denied by the http authorizer"
    assert world.app.count() == served


def test_a_request_the_custom_rules_do_not_match_never_reaches_the_authorizer(
    world: World,
) -> None:
    world.use("authz-http")
    world.http.checked.clear()
    status, _, _ = world.call("/public/page", {"x-user": "mallory"})
    assert status == 200
    assert world.http.checked == []


def test_grpc_provider_allows_and_denies(world: World) -> None:
    world.use("authz-grpc")
    world.grpc.checked.clear()
    status, _, _ = world.call("/protected/x", {"x-user": "alice"})
    assert status == 200
    assert world.app.requests[-1].headers.get("x-grpc-authz") == "ok"
    status, headers, body = world.call("/protected/x", {"x-user": "mallory"})
    assert status == 403
    assert headers.get("x-grpc-reason") == "not-alice"
    assert body == b"denied by the grpc authorizer"
    assert len(world.grpc.checked) == 2
    assert world.call("/public/x", {"x-user": "mallory"})[0] == 200
    assert len(world.grpc.checked) == 2


def test_a_provider_that_is_down_fails_closed(world: World) -> None:
    world.use("authz-down")
    served = world.app.count()
    status, _, _ = world.call("/protected/x", {"x-user": "alice"})
    assert status == 403  # Envoy's default status on an authorizer error
    assert world.app.count() == served
    assert world.call("/public/x")[0] == 200


def test_fail_open_passes_when_the_provider_is_down(world: World) -> None:
    world.use("authz-down-open")
    assert world.call("/protected/x", {"x-user": "mallory"})[0] == 200


def test_an_unknown_provider_denies_what_the_policy_matches(world: World) -> None:
    world.mesh.write("policy.yaml", custom_policy("no-such-provider"))
    assert wait_until(
        lambda: (
            "deny-due-to-bad-CUSTOM-action"
            in world.sidecar.envoy.admin("/config_dump?resource=dynamic_listeners")
        ),
        timeout=15,
    )
    world.http.checked.clear()
    status, _, body = world.call("/protected/x", {"x-user": "alice"})
    assert status == 403 and body == b"RBAC: access denied"
    assert world.call("/public/x")[0] == 200
    assert world.http.checked == []


def test_a_mesh_config_change_reaches_the_sidecar(world: World) -> None:
    """Editing mesh.yaml alone (the policy unchanged) recompiles what depends on it."""
    world.use("authz-down")
    assert world.call("/protected/x")[0] == 403
    text = mesh_yaml(0, 0)
    opened = text.replace(
        "envoyExtAuthzHttp: {service: authz-down.foo.svc.cluster.local, port: 8000, timeout: 1s}",
        "envoyExtAuthzHttp: {service: authz-down.foo.svc.cluster.local, port: 8000, "
        "timeout: 1s, failOpen: true}",
    )
    assert opened != text
    world.mesh.write("mesh.yaml", opened)
    try:
        assert wait_until(lambda: world.call("/protected/x")[0] == 200, timeout=15)
    finally:
        world.mesh.write("mesh.yaml", text)
    assert wait_until(lambda: world.call("/protected/x")[0] == 403, timeout=15)


def tcp_echo(world: World) -> str:
    try:
        return echo_once(POD, world.tcp_port, "hello", timeout=5)
    except OSError as exc:
        return f"error: {exc}"


def test_a_grpc_provider_checks_tcp_connections(world: World) -> None:
    """On a TCP port the CUSTOM rule's HTTP conditions are dropped (broader, as istiod does
    for CUSTOM), so every connection is checked by the gRPC authorizer."""
    world.use("authz-grpc")
    world.grpc.allow_tcp = False
    checked = world.grpc.tcp_checked
    # Envoy's tcp_proxy may open the upstream connection before the check answers, but no
    # byte reaches the app: the client gets no echo and the connection is closed.
    assert not tcp_echo(world).startswith("reviews-tcp")
    assert world.grpc.tcp_checked == checked + 1
    world.grpc.allow_tcp = True
    assert tcp_echo(world) == "reviews-tcp hello"
    assert world.grpc.tcp_checked == checked + 2


def test_an_http_provider_leaves_tcp_ports_alone(world: World) -> None:
    world.use("authz-http")
    world.grpc.allow_tcp = False
    assert tcp_echo(world) == "reviews-tcp hello"
