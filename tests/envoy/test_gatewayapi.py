"""Traffic through a real gateway Envoy configured by the Kubernetes Gateway API (file mode):
a Gateway of class ``istio`` and HTTPRoutes attached to it, converted into the gateway
compiler's own model (store/gatewayapi.py). Each HTTPRoute filter, weighted backends,
header/query/method matches, and a cross-namespace backendRef refused without a
ReferenceGrant (500 and RefNotPermitted, as the specification says) and allowed with one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.testing.mesh import GatewayProxy, LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.support import meshes

V1, V2, MIRROR, REMOTE = "127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"
HOST = "app.example.com"
GW_LABELS = {"gateway.networking.k8s.io/gateway-name": "edge"}


def gateway_api(kind: str, name: str, spec: str, namespace: str = "default") -> str:
    version = "v1beta1" if kind == "ReferenceGrant" else "v1"
    return meshes.resource(
        kind,
        name,
        spec,
        namespace=namespace,
        api_version=f"gateway.networking.k8s.io/{version}",
    )


def edge_gateway(port: int) -> str:
    return gateway_api(
        "Gateway",
        "edge",
        f"""
        gatewayClassName: istio
        listeners:
        - name: http
          port: {port}
          protocol: HTTP
          allowedRoutes: {{namespaces: {{from: All}}}}
        """,
    )


ROUTES = gateway_api(
    "HTTPRoute",
    "app",
    f"""
    parentRefs: [{{name: edge}}]
    hostnames: [{HOST}]
    rules:
    - matches: [{{path: {{type: PathPrefix, value: /headers}}}}]
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{{name: x-set, value: gateway}}]
          add: [{{name: x-added, value: one}}]
          remove: [x-remove-me]
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          set: [{{name: x-response, value: modified}}]
          remove: [x-backend]
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
      filters:
      - type: RequestRedirect
        requestRedirect: {{hostname: moved.example.com, statusCode: 301,
                           path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}
    - matches: [{{path: {{type: PathPrefix, value: /rewrite}}}}]
      filters:
      - type: URLRewrite
        urlRewrite: {{hostname: rewritten.example.com,
                      path: {{type: ReplacePrefixMatch, replacePrefixMatch: /inner}}}}
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: Exact, value: /full}}}}]
      filters:
      - type: URLRewrite
        urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /replaced}}}}
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
      filters:
      - type: RequestMirror
        requestMirror: {{backendRef: {{name: mirror, port: 8080}}}}
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
      backendRefs:
      - {{name: echo-v1, port: 8080, weight: 3}}
      - {{name: echo-v2, port: 8080, weight: 1}}
    - matches:
      - {{path: {{type: PathPrefix, value: /match}}, headers: [{{name: x-version, value: v2}}]}}
      - {{path: {{type: PathPrefix, value: /match}}, queryParams: [{{name: v, value: "2"}}]}}
      - {{path: {{type: PathPrefix, value: /match}}, method: POST}}
      backendRefs: [{{name: echo-v2, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /match}}}}]
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
      timeouts: {{request: 300ms}}
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /backend-slow}}}}]
      timeouts: {{request: 5s, backendRequest: 300ms}}
      backendRefs: [{{name: echo-v1, port: 8080}}]
    - matches: [{{path: {{type: PathPrefix, value: /secure}}}}]
      filters:
      - type: RequestRedirect
        requestRedirect: {{scheme: https}}
    """,
)

CROSS = gateway_api(
    "HTTPRoute",
    "cross",
    """
    parentRefs: [{name: edge}]
    hostnames: [remote.example.com]
    rules:
    - backendRefs: [{name: remote, namespace: other, port: 8080}]
    """,
)

GRANT = gateway_api(
    "ReferenceGrant",
    "let-default-in",
    """
    from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
    to: [{group: "", kind: Service}]
    """,
    namespace="other",
)


def backends_yaml(target: int) -> str:
    return meshes.join(
        meshes.service("echo-v1", 8080, target_port=target),
        meshes.pod("echo-v1", V1, app="echo-v1"),
        meshes.service("echo-v2", 8080, target_port=target),
        meshes.pod("echo-v2", V2, app="echo-v2"),
        meshes.service("mirror", 8080, target_port=target),
        meshes.pod("mirror", MIRROR, app="mirror"),
        meshes.service("remote", 8080, target_port=target, namespace="other"),
        meshes.pod("remote", REMOTE, app="remote", namespace="other"),
    )


@dataclass
class Edge:
    mesh: LocalMesh
    gateway: GatewayProxy
    port: int

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.mesh.debug.get("/debug/gateway_api_status")
        return found

    def push(self, name: str, text: str | None) -> None:
        """Write (or remove) a file and wait until the gateway ACKed the routes it makes."""
        before = self.mesh.debug.type_state(self.gateway.node_id, "rds")["acked_version"]
        if text is None:
            self.mesh.remove(name)
        else:
            self.mesh.write(name, text)
        self.mesh.debug.wait_synced(self.gateway.node_id, timeout=10, newer_than={"rds": before})


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    mesh = LocalMesh(tmp_path_factory.mktemp("gwapi"))
    try:
        from controlplane.testing.backends import Reply

        target = free_port()
        mesh.backend(
            "echo-v1",
            V1,
            target,
            lambda b, seen: Reply(delay=1.0) if "slow" in seen.path else None,
        )
        mesh.backend("echo-v2", V2, target)
        mesh.backend("mirror", MIRROR, target)
        mesh.backend("remote", REMOTE, target)
        port = free_port()
        mesh.write("backends.yaml", backends_yaml(target))
        mesh.write("gateway.yaml", edge_gateway(port))
        mesh.write("routes.yaml", meshes.join(ROUTES, CROSS))
        mesh.start()
        proxy = mesh.gateway("edge", namespace="default", labels=GW_LABELS)
        yield Edge(mesh, proxy, port)
    finally:
        mesh.stop()


def test_request_and_response_header_modifiers(edge: Edge) -> None:
    status, headers, body = send(
        edge.port, HOST, "/headers", headers={"x-remove-me": "1", "x-set": "client"}
    )
    assert status == 200
    import json

    seen = json.loads(body)["headers"]
    assert seen["x-set"] == "gateway" and seen["x-added"] == "one", seen
    assert "x-remove-me" not in seen
    assert headers["x-response"] == "modified" and "x-backend" not in headers, headers


def test_request_redirect(edge: Edge) -> None:
    status, headers, _ = send(edge.port, HOST, "/old/page")
    assert status == 301
    assert headers["location"] == "http://moved.example.com/new/page", headers


def test_url_rewrite_of_prefix_and_host(edge: Edge) -> None:
    import json

    status, _, body = send(edge.port, HOST, "/rewrite/x?q=1")
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/inner/x?q=1", seen
    assert seen["headers"]["host"] == "rewritten.example.com"
    # segment-wise: /rewritex is not under /rewrite
    assert send(edge.port, HOST, "/rewritex")[0] == 404


def test_url_rewrite_of_the_full_path(edge: Edge) -> None:
    import json

    status, _, body = send(edge.port, HOST, "/full")
    assert status == 200 and json.loads(body)["path"] == "/replaced"


def test_request_mirror_copies_to_the_mirror_backend(edge: Edge) -> None:
    mirror = next(b for b in edge.mesh.backends if b.name == "mirror")
    before = len(mirror.requests)
    status, _, body = send(edge.port, HOST, "/mirror/one")
    assert status == 200 and b"echo-v1" in body
    wait_until(lambda: len(mirror.requests) > before, "the mirrored request")
    assert mirror.requests[-1].path == "/mirror/one"


def test_weighted_backends_split_three_to_one(edge: Edge) -> None:
    counts = count_backends(edge.port, HOST, 800, path="/split")
    assert set(counts) == {"echo-v1", "echo-v2"}, counts
    assert abs(100.0 * counts["echo-v2"] / 800 - 25) <= 5, counts


def test_header_query_and_method_matches(edge: Edge) -> None:
    assert count_backends(edge.port, HOST, 5, path="/match") == {"echo-v1": 5}
    headers = {"x-version": "v2"}
    assert count_backends(edge.port, HOST, 5, path="/match", headers=headers) == {"echo-v2": 5}
    assert count_backends(edge.port, HOST, 5, path="/match?v=2") == {"echo-v2": 5}
    assert send(edge.port, HOST, "/match", method="POST", body=b"")[2].count(b"echo-v2") == 1


def test_request_timeout(edge: Edge) -> None:
    started = time.monotonic()
    assert send(edge.port, HOST, "/slow")[0] == 504
    assert time.monotonic() - started < 0.9


def test_a_cross_namespace_backend_needs_a_reference_grant(edge: Edge) -> None:
    assert send(edge.port, "remote.example.com", "/")[0] == 500
    parent = edge.status()["HTTPRoute default/cross"]["parents"][0]
    resolved = next(c for c in parent["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted"), resolved
    edge.push("grant.yaml", GRANT)
    try:
        status, _, body = send(edge.port, "remote.example.com", "/")
        assert status == 200 and b'"remote"' in body
        parent = edge.status()["HTTPRoute default/cross"]["parents"][0]
        resolved = next(c for c in parent["conditions"] if c["type"] == "ResolvedRefs")
        assert resolved["status"] == "True", resolved
    finally:
        edge.push("grant.yaml", None)
    assert send(edge.port, "remote.example.com", "/")[0] == 500


def test_the_gateway_status_counts_attached_routes(edge: Edge) -> None:
    status = edge.status()["KubernetesGateway default/edge"]
    listener = status["listeners"][0]
    assert listener["attachedRoutes"] == 2
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Accepted"] == ("True", "Accepted")


def test_a_backend_request_timeout_bounds_each_try(edge: Edge) -> None:
    started = time.monotonic()
    assert send(edge.port, HOST, "/backend-slow")[0] == 504
    assert time.monotonic() - started < 0.9


def test_a_scheme_redirect_drops_the_default_port(edge: Edge) -> None:
    status, headers, _ = send(edge.port, HOST, "/secure/page")
    assert status == 302
    assert headers["location"] == "https://app.example.com/secure/page", headers


PARTLY_INVALID = gateway_api(
    "HTTPRoute",
    "partly-invalid",
    """
    parentRefs: [{name: edge}]
    hostnames: [partly.example.com]
    rules:
    - matches: [{path: {type: PathPrefix, value: /not-found}}]
      backendRefs: [{name: echo-v1, port: 8080}, {name: missing, port: 8080}]
    - matches: [{path: {type: PathPrefix, value: /not-permitted}}]
      backendRefs: [{name: echo-v1, port: 8080}, {name: remote, namespace: other, port: 8080}]
    - matches: [{path: {type: PathPrefix, value: /wrong-kind}}]
      backendRefs:
      - {name: echo-v1, port: 8080, weight: 1}
      - {group: example.com, kind: Bucket, name: echo-v2, weight: 3}
    """,
)


def test_the_share_of_an_invalid_backend_answers_500(edge: Edge) -> None:
    """The specification: requests that would have gone to an invalid backend get 500, the
    valid backends keep only their own share (not the whole rule)."""
    edge.push("partly.yaml", PARTLY_INVALID)
    try:
        for path in ("/not-found", "/not-permitted"):
            counts = count_backends(edge.port, "partly.example.com", 400, path=path)
            assert set(counts) == {"echo-v1", "500"}, (path, counts)
            assert abs(100.0 * counts["500"] / 400 - 50) <= 8, (path, counts)
        counts = count_backends(edge.port, "partly.example.com", 400, path="/wrong-kind")
        assert set(counts) == {"echo-v1", "500"}, counts
        assert abs(100.0 * counts["500"] / 400 - 75) <= 8, counts
        parent = edge.status()["HTTPRoute default/partly-invalid"]["parents"][0]
        resolved = next(c for c in parent["conditions"] if c["type"] == "ResolvedRefs")
        assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    finally:
        edge.push("partly.yaml", None)
