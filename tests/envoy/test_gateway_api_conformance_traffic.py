"""The traffic half of two core Gateway API conformance tests, through a real gateway Envoy
(file mode), with the upstream manifests as they are (tests/cluster/gateway_api.sh pins the
release): the `same-namespace` Gateway of base/manifests.yaml (its listener port moved to a
free loopback port) and the test's own HTTPRoute, backends as loopback servers for the
Services the suite deploys. The expected responses are those of the tests' .go files
(named in each test below, the suite's ShortName in CamelCase)."""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
import pytest
import yaml

from controlplane.testing.mesh import GatewayProxy, LocalMesh
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends, send
from tests.cluster import gateway_api
from tests.support import conformance_tcp, meshes, pki
from tests.support import grpc_echo as grpc_echo_support

NS = "gateway-conformance-infra"
WEB_NS, WEB_BACKEND = "gateway-conformance-web-backend", "127.0.0.74"
APP_NS = "gateway-conformance-app-backend"
APP_BACKENDS = {"app-backend-v1": "127.0.0.78", "app-backend-v2": "127.0.0.79"}
BACKENDS = {
    "infra-backend-v1": "127.0.0.71",
    "infra-backend-v2": "127.0.0.72",
    "infra-backend-v3": "127.0.0.73",
}


def upstream(path: str) -> list[dict]:
    text = (gateway_api.conformance_dir() / path).read_text()
    text = text.replace("{GATEWAY_CLASS_NAME}", "istio")
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


_REQUEST = re.compile(r"Request:\s*http\.Request\{((?:[^{}]|\{[^{}]*\})*)\}")


def expected_responses(
    go_file: str, after: str = "", before: str = ""
) -> list[tuple[str, str, dict[str, str], str | int]]:
    """(host, path, headers, backend name or status code) of each ``http.ExpectedResponse``
    with a plain request in a conformance test's .go file (between two markers), in order."""
    text = (gateway_api.conformance_dir() / "tests" / go_file).read_text()
    text = text[text.index(after) if after else 0 : text.index(before) if before else len(text)]
    starts = [m for m in _REQUEST.finditer(text)]
    out: list[tuple[str, str, dict[str, str], str | int]] = []
    for i, match in enumerate(starts):
        request = match.group(1)
        rest = text[match.end() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        host = re.search(r'Host:\s*"([^"]*)"', request)
        path = re.search(r'Path:\s*"([^"]*)"', request)
        headers = re.search(r"Headers:\s*map\[string\]string\{([^}]*)\}", request)
        backend = re.search(
            r'Backend:\s*(?:confsuite\.InfraBackendServiceNameV(\d)|"([^"]+)")', rest
        )
        code = re.search(r"StatusCode:\s*(\d+)", rest)
        expected: str | int
        if code is not None and code.group(1) != "200":
            expected = int(code.group(1))  # a Backend named next to it is informational
        elif backend is not None:
            expected = (
                f"infra-backend-v{backend.group(1)}" if backend.group(1) else backend.group(2)
            )
        else:
            continue
        pairs = re.findall(r'"([^"]+)":\s*"([^"]*)"', headers.group(1)) if headers else []
        out.append(
            (
                host.group(1) if host else "example.com",
                path.group(1) if path else "/",
                dict(pairs),
                expected,
            )
        )
    return out


def same_namespace_gateway(port: int, name: str = "same-namespace") -> str:
    """A Gateway of base/manifests.yaml (by default `same-namespace`) on ``port``."""
    [gateway] = [
        d
        for d in upstream("base/manifests.yaml")
        if d.get("kind") == "Gateway" and d["metadata"]["name"] == name
    ]
    gateway["spec"]["listeners"][0]["port"] = port
    return yaml.safe_dump(gateway)


@dataclass
class Conformance:
    mesh: LocalMesh
    gateway: GatewayProxy
    port: int

    def only(self, test_manifest: str) -> None:
        """Route with this conformance test's manifest alone (as the suite runs each test)."""
        before = self.mesh.debug.type_state(self.gateway.node_id, "rds")["acked_version"]
        self.mesh.write("test.yaml", yaml.safe_dump_all(upstream(f"tests/{test_manifest}")))
        self.mesh.debug.wait_synced(self.gateway.node_id, timeout=10, newer_than={"rds": before})


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    mesh = LocalMesh(tmp_path_factory.mktemp("conformance"))
    try:
        target = free_port()
        documents = []
        for name, ip in BACKENDS.items():
            mesh.backend(name, ip, target)
            documents += [
                meshes.service(name, 8080, target_port=target, namespace=NS),
                meshes.pod(name, ip, app=name, namespace=NS),
            ]
        # The suite's backend in its other namespace: routes reach it only with a ReferenceGrant.
        mesh.backend("web-backend", WEB_BACKEND, target)
        documents += [
            meshes.service("web-backend", 8080, target_port=target, namespace=WEB_NS),
            meshes.pod("web-backend", WEB_BACKEND, app="web-backend", namespace=WEB_NS),
        ]
        for name, ip in APP_BACKENDS.items():
            mesh.backend(name, ip, target)
            documents += [
                meshes.service(name, 8080, target_port=target, namespace=APP_NS),
                meshes.pod(name, ip, app=name, namespace=APP_NS),
            ]
        # The suite's Namespaces as base/manifests.yaml declares them, labels included (a
        # listener's `allowedRoutes.namespaces.from: Selector` selects by them).
        namespaces = [d for d in upstream("base/manifests.yaml") if d["kind"] == "Namespace"]
        port = free_port()
        mesh.write("namespaces.yaml", yaml.safe_dump_all(namespaces))
        mesh.write("backends.yaml", meshes.join(*documents))
        mesh.write("gateway.yaml", same_namespace_gateway(port))
        mesh.start()
        proxy = mesh.gateway(
            "same-namespace",
            namespace=NS,
            labels={"gateway.networking.k8s.io/gateway-name": "same-namespace"},
        )
        yield Conformance(mesh, proxy, port)
    finally:
        mesh.stop()


def test_httproute_simple_same_namespace(conformance: Conformance) -> None:
    conformance.only("httproute-simple-same-namespace.yaml")
    assert count_backends(conformance.port, "example.com", 5, path="/") == {"infra-backend-v1": 5}


def test_httproute_exact_path_matching(conformance: Conformance) -> None:
    conformance.only("httproute-exact-path-matching.yaml")
    port = conformance.port
    assert count_backends(port, "example.com", 3, path="/one") == {"infra-backend-v1": 3}
    assert count_backends(port, "example.com", 3, path="/two") == {"infra-backend-v2": 3}
    for path in ("/", "/one/example", "/two/", "/Two"):
        assert send(port, "example.com", path)[0] == 404, path


def test_httproute_matching(conformance: Conformance) -> None:
    conformance.only("httproute-matching.yaml")
    port = conformance.port
    v1, v2 = {"infra-backend-v1": 1}, {"infra-backend-v2": 1}
    cases = [
        ("/", {}, v1),
        ("/example", {}, v1),
        ("/", {"Version": "one"}, v1),
        ("/v2", {}, v2),
        ("/v2/example", {}, v2),
        ("/", {"Version": "two"}, v2),
        ("/v2/", {}, v2),
        ("/v2example", {}, v1),  # not a path segment prefix of /v2
        ("/foo/v2/example", {}, v1),
    ]
    for path, headers, backend in cases:
        assert count_backends(port, "example.com", 1, path=path, headers=headers) == backend, (
            path,
            headers,
        )


def test_httproute_weight(conformance: Conformance) -> None:
    conformance.only("httproute-weight.yaml")
    counts = count_backends(conformance.port, "example.com", 500, path="/")
    assert set(counts) <= {"infra-backend-v1", "infra-backend-v2"}, counts  # v3: weight 0
    assert abs(100.0 * counts.get("infra-backend-v1", 0) / 500 - 70) <= 7, counts


def test_httproute_header_matching(conformance: Conformance) -> None:
    conformance.only("httproute-header-matching.yaml")
    port = conformance.port
    v1, v2 = {"infra-backend-v1": 1}, {"infra-backend-v2": 1}
    routed = [
        ({"Version": "one"}, v1),
        ({"Version": "two"}, v2),
        ({"Version": "two", "Color": "orange"}, v1),
        ({"Version": "two", "Color": "blue"}, v2),
        ({"Color": "blue"}, v1),
        ({"Color": "green"}, v1),
        ({"Color": "red"}, v2),
        ({"Color": "yellow"}, v2),
    ]
    for headers, backend in routed:
        assert count_backends(port, "example.com", 1, path="/", headers=headers) == backend, headers
    for headers in ({"Color": "orange"}, {"Some-Other-Header": "one"}, {"Color": "purple"}):
        assert send(port, "example.com", "/", headers=headers)[0] == 404, headers


def test_httproute_invalid_nonexistent_backend_ref_and_unknown_kind_answer_500(
    conformance: Conformance,
) -> None:
    conformance.only("httproute-invalid-nonexistent-backendref.yaml")
    assert send(conformance.port, "example.com", "/")[0] == 500
    conformance.only("httproute-invalid-backendref-unknown-kind.yaml")
    assert send(conformance.port, "example.com", "/v2")[0] == 500


def test_httproute_no_backend_refs(conformance: Conformance) -> None:
    conformance.only("httproute-omitted-backendrefs.yaml")
    port = conformance.port
    assert count_backends(port, "example.com", 1, path="/forward") == {"infra-backend-v1": 1}
    assert send(port, "example.com", "/omitted-no-forward")[0] == 500
    assert send(port, "example.com", "/empty-no-forward")[0] == 500


def test_httproute_redirect_host_and_status(conformance: Conformance) -> None:
    conformance.only("httproute-redirect-host-and-status.yaml")
    for path, code in (("/hostname-redirect", 302), ("/host-and-status", 301)):
        status, headers, _ = send(conformance.port, "example.com", path)
        assert status == code, (path, status)
        assert headers["location"].startswith("http://example.org"), headers


def test_httproute_path_match_order(conformance: Conformance) -> None:
    conformance.only("httproute-path-match-order.yaml")
    cases = [
        ("/match/exact/one", "infra-backend-v3"),
        ("/match/exact", "infra-backend-v2"),
        ("/match", "infra-backend-v1"),
        ("/match/prefix/one/any", "infra-backend-v2"),
        ("/match/prefix/any", "infra-backend-v1"),
        ("/match/any", "infra-backend-v3"),
    ]
    for path, backend in cases:
        assert count_backends(conformance.port, "example.com", 1, path=path) == {backend: 1}, path


def test_httproute_matching_across_routes(conformance: Conformance) -> None:
    conformance.only("httproute-matching-across-routes.yaml")
    cases = [
        ("example.com", "/", {}, "infra-backend-v1"),
        ("example.com", "/example", {}, "infra-backend-v1"),
        ("example.net", "/example", {}, "infra-backend-v1"),
        ("example.com", "/example", {"Version": "one"}, "infra-backend-v1"),
        ("example.com", "/v2", {}, "infra-backend-v2"),
        ("example.net", "/v2", {}, "infra-backend-v1"),
        ("example.com", "/v2/example", {}, "infra-backend-v2"),
        ("example.com", "/", {"Version": "two"}, "infra-backend-v2"),
    ]
    for host, path, headers, backend in cases:
        found = count_backends(conformance.port, host, 1, path=path, headers=headers)
        assert found == {backend: 1}, (host, path, headers, found)


def test_httproute_invalid_cross_namespace_backend_ref_answers_500(
    conformance: Conformance,
) -> None:
    conformance.only("httproute-invalid-cross-namespace-backend-ref.yaml")
    assert send(conformance.port, "example.com", "/")[0] == 500


def test_httproute_reference_grant(conformance: Conformance) -> None:
    conformance.only("httproute-reference-grant.yaml")
    port = conformance.port
    assert count_backends(port, "example.com", 3, path="/") == {"web-backend": 3}
    # The test then deletes the ReferenceGrant: the route's backend is refused again.
    [route] = [
        d for d in upstream("tests/httproute-reference-grant.yaml") if d["kind"] == "HTTPRoute"
    ]
    before = conformance.mesh.debug.type_state(conformance.gateway.node_id, "rds")["acked_version"]
    conformance.mesh.write("test.yaml", yaml.safe_dump(route))
    conformance.mesh.debug.wait_synced(
        conformance.gateway.node_id, timeout=10, newer_than={"rds": before}
    )
    assert send(port, "example.com", "/")[0] == 500


def test_httproute_listener_hostname_matching(conformance: Conformance) -> None:
    """The test's own Gateway (four listeners on one port, by hostname), on a gateway Envoy
    of its own: its listener port moved to a free loopback port."""
    port = free_port()
    documents = upstream("tests/httproute-listener-hostname-matching.yaml")
    for doc in documents:
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = port
    conformance.mesh.write("test.yaml", yaml.safe_dump_all(documents))
    conformance.mesh.gateway(
        "httproute-listener-hostname-matching",
        namespace=NS,
        labels={"gateway.networking.k8s.io/gateway-name": "httproute-listener-hostname-matching"},
        address="127.0.0.75",
    )
    cases = [
        ("bar.com", "infra-backend-v1"),
        ("foo.bar.com", "infra-backend-v2"),
        ("baz.bar.com", "infra-backend-v3"),
        ("boo.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.foo.com", "infra-backend-v3"),
    ]
    for host, backend in cases:
        assert count_backends(port, host, 1, path="/") == {backend: 1}, host
    for host in ("foo.com", "no.matching.host"):
        assert send(port, host, "/")[0] == 404, host


def test_httproute_hostname_intersection(conformance: Conformance) -> None:
    """Its own two Gateways (three listeners by hostname, and one without): the test sends to
    the first; every expected response of its .go file is checked."""
    ports = {
        "httproute-hostname-intersection": free_port(),
        "httproute-hostname-intersection-all": free_port(),
    }
    documents = upstream("tests/httproute-hostname-intersection.yaml")
    for doc in documents:
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = ports[doc["metadata"]["name"]]
    conformance.mesh.write("test.yaml", yaml.safe_dump_all(documents))
    for i, name in enumerate(ports):
        conformance.mesh.gateway(
            name,
            namespace=NS,
            labels={"gateway.networking.k8s.io/gateway-name": name},
            address=f"127.0.0.{76 + i}",
        )
    # The .go file's sections: the first Gateway's, then (from the -all Gateway's name on)
    # the second's.
    marker = 'Name: "httproute-hostname-intersection-all"'
    go_file = "httproute-hostname-intersection.go"
    sections = {
        "httproute-hostname-intersection": expected_responses(go_file, before=marker),
        "httproute-hostname-intersection-all": expected_responses(go_file, after=marker),
    }
    assert len(sections["httproute-hostname-intersection"]) >= 25, sections
    assert sections["httproute-hostname-intersection-all"], sections
    for name, cases in sections.items():
        for host, path, headers, expected in cases:
            if isinstance(expected, int):
                found: object = send(ports[name], host, path, headers=headers)[0]
            else:
                found = count_backends(ports[name], host, 1, path=path, headers=headers)
                expected = {expected: 1}
            assert found == expected, (name, host, path, found)


def check_expected(port: int, cases: list[tuple[str, str, dict[str, str], str | int]]) -> None:
    for host, path, headers, expected in cases:
        if isinstance(expected, int):
            found: object = send(port, host, path, headers=headers)[0]
        else:
            found = count_backends(port, host, 1, path=path, headers=headers)
            expected = {expected: 1}
        assert found == expected, (host, path, headers, found)


@pytest.mark.parametrize(
    "test",
    [
        "httproute-invalid-reference-grant",
        "httproute-partially-invalid-via-invalid-reference-grant",
    ],
)
def test_httproute_invalid_reference_grants(conformance: Conformance, test: str) -> None:
    conformance.only(f"{test}.yaml")
    cases = expected_responses(f"{test}.go")
    assert cases
    check_expected(conformance.port, cases)


def test_httproute_multiple_gateways(conformance: Conformance) -> None:
    """The base `all-namespaces` Gateway next to `same-namespace`, each on its own Envoy."""
    other = free_port()
    conformance.mesh.write("all-namespaces.yaml", same_namespace_gateway(other, "all-namespaces"))
    conformance.mesh.gateway(
        "all-namespaces",
        namespace=NS,
        labels={"gateway.networking.k8s.io/gateway-name": "all-namespaces"},
        address="127.0.0.80",
    )
    conformance.only("httproute-multiple-gateways.yaml")
    marker = 'Name: "all-namespaces"'
    go_file = "httproute-multiple-gateways.go"
    same, everyone = (
        expected_responses(go_file, before=marker),
        expected_responses(go_file, after=marker),
    )
    assert same and everyone
    check_expected(conformance.port, same)
    check_expected(other, everyone)


def test_httproute_cross_namespace(conformance: Conformance) -> None:
    """The base `backend-namespaces` Gateway admits routes of Namespaces labelled
    `gateway-conformance: backend` (`from: Selector`): the web-backend namespace's route
    attaches and reaches web-backend."""
    other = free_port()
    conformance.mesh.write(
        "backend-namespaces.yaml", same_namespace_gateway(other, "backend-namespaces")
    )
    conformance.mesh.gateway(
        "backend-namespaces",
        namespace=NS,
        labels={"gateway.networking.k8s.io/gateway-name": "backend-namespaces"},
        address="127.0.0.81",
    )
    conformance.only("httproute-cross-namespace.yaml")
    assert count_backends(other, "example.com", 3, path="/") == {"web-backend": 3}
    status = conformance.mesh.debug.get("/debug/gateway_api_status")
    parent = status[f"HTTPRoute {WEB_NS}/cross-namespace"]["parents"][0]
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}, parent


def test_httproute_service_types(conformance: Conformance) -> None:
    """A Service with manual EndpointSlices (no selector), a headless Service and a headless
    one with manual EndpointSlices, each reached through the route. The suite fills the
    manual slices with infra-backend-v1's pod addresses (setupEndpointSlices); here that is
    its loopback address, and the Services' target port 3000 is moved to the backends'."""
    target = conformance.mesh.backends[0].port
    documents = upstream("tests/httproute-service-types.yaml")
    for doc in documents:
        if doc["kind"] == "Service":
            for port in doc["spec"]["ports"]:
                port["targetPort"] = target
        elif doc["kind"] == "EndpointSlice":
            for port in doc["ports"]:
                port["port"] = target
            if doc["addressType"] == "IPv4":
                doc["endpoints"] = [
                    {"addresses": [BACKENDS["infra-backend-v1"]], "conditions": {"ready": True}}
                ]
            else:  # the suite adds the pods' IPv6 addresses, which loopback backends lack
                doc["endpoints"] = []
    before = conformance.mesh.debug.type_state(conformance.gateway.node_id, "rds")["acked_version"]
    conformance.mesh.write("test.yaml", yaml.safe_dump_all(documents))
    conformance.mesh.debug.wait_synced(
        conformance.gateway.node_id, timeout=10, newer_than={"rds": before}
    )
    for path in ("manual-endpointslices", "headless-manual-endpointslices", "headless"):
        found = count_backends(conformance.port, "example.com", 3, path=f"/{path}")
        assert found == {"infra-backend-v1": 3}, (path, found)


# ---- GRPCRoute: the suite's grpc-echo backends (tests/support/grpc_echo.py) ------------------

GRPC_BACKENDS = {
    "grpc-infra-backend-v1": "127.0.0.82",
    "grpc-infra-backend-v2": "127.0.0.83",
    "grpc-infra-backend-v3": "127.0.0.84",
}
_GRPC_CASE = re.compile(r"(EchoTwo|EchoThree|Echo)Request:\s*&pb\.EchoRequest\{\}")


@dataclass(frozen=True)
class GrpcCase:
    method: str
    authority: str | None
    metadata: dict[str, str]
    expected: str  # a backend name, or a gRPC status code name (UNIMPLEMENTED)


def expected_rpcs(go_file: str) -> list[GrpcCase]:
    """Each ``grpc.ExpectedResponse`` of a GRPCRoute conformance test's .go file: the method,
    authority and metadata it sends and the backend (or status code) it expects."""
    text = (gateway_api.conformance_dir() / "tests" / go_file).read_text()
    starts = list(_GRPC_CASE.finditer(text))
    out = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        chunk = text[match.end() : end]
        authority = re.search(r'Authority:\s*"([^"]*)"', chunk)
        metadata = re.search(r"Metadata:\s*map\[string\]string\{([^}]*)\}", chunk)
        backend = re.search(r'Backend:\s*"([^"]+)"', chunk)
        code = re.search(r"Code:\s*codes\.(\w+)", chunk)
        if backend is not None:
            expected = backend.group(1)
        elif code is not None:
            expected = re.sub(r"(?<!^)(?=[A-Z])", "_", code.group(1)).upper()
        else:
            continue
        pairs = re.findall(r'"([^"]+)":\s*"([^"]*)"', metadata.group(1)) if metadata else []
        out.append(
            GrpcCase(
                match.group(1), authority.group(1) if authority else None, dict(pairs), expected
            )
        )
    return out


@pytest.fixture(scope="module")
def grpc_echo(conformance: Conformance) -> Iterator[ModuleType]:
    """The suite's three grpc-echo Services (base/manifests.yaml, `appProtocol:
    kubernetes.io/h2c`; target port moved to the loopback servers')."""
    pb2 = grpc_echo_support.load_protos(gateway_api.conformance_dir())
    target = free_port()
    servers = []
    documents = []
    try:
        for name, ip in GRPC_BACKENDS.items():
            identity = grpc_echo_support.EchoIdentity(NS, name, f"{name}-5d8f9c7b4-x2x7q")
            servers.append(grpc_echo_support.start_echo_server(pb2, identity, ip, target))
            [service] = [
                d
                for d in upstream("base/manifests.yaml")
                if d["kind"] == "Service" and d["metadata"]["name"] == name
            ]
            service["spec"]["ports"][0]["targetPort"] = target
            documents += [yaml.safe_dump(service), meshes.pod(name, ip, app=name, namespace=NS)]
        node = conformance.gateway.node_id
        before = conformance.mesh.debug.type_state(node, "cds")["acked_version"]
        conformance.mesh.write("grpc-backends.yaml", meshes.join(*documents))
        conformance.mesh.debug.wait_synced(node, timeout=10, newer_than={"cds": before})
        yield pb2
    finally:
        for server in servers:
            server.stop(grace=None)


def check_rpcs(pb2: ModuleType, port: int, cases: list[GrpcCase]) -> None:
    for case in cases:
        answer = grpc_echo_support.call_echo(
            pb2, f"127.0.0.1:{port}", case.method, case.authority, case.metadata
        )
        if case.expected.isupper():
            assert answer.code.name == case.expected, (case, answer)
        else:
            assert answer.code == grpc.StatusCode.OK, (case, answer)
            # The suite's checks: the method, the backend's namespace, its pod name's prefix.
            assert answer.method == f"/{grpc_echo_support.SERVICE}/{case.method}", answer
            assert answer.namespace == NS, answer
            assert answer.pod.startswith(case.expected), (case, answer)


@pytest.mark.parametrize("test", ["grpcroute-exact-method-matching", "grpcroute-header-matching"])
def test_grpcroute_matching(conformance: Conformance, grpc_echo: ModuleType, test: str) -> None:
    conformance.only(f"{test}.yaml")
    cases = expected_rpcs(f"{test}.go")
    assert len(cases) >= 3, cases
    check_rpcs(grpc_echo, conformance.port, cases)


def test_grpcroute_listener_hostname_matching(
    conformance: Conformance, grpc_echo: ModuleType
) -> None:
    """The test's own Gateway (four listeners on one port, by hostname) on its own Envoy."""
    port = free_port()
    documents = upstream("tests/grpcroute-listener-hostname-matching.yaml")
    for doc in documents:
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = port
    conformance.mesh.write("test.yaml", yaml.safe_dump_all(documents))
    conformance.mesh.gateway(
        "grpcroute-listener-hostname-matching",
        namespace=NS,
        labels={"gateway.networking.k8s.io/gateway-name": "grpcroute-listener-hostname-matching"},
        address="127.0.0.85",
    )
    cases = expected_rpcs("grpcroute-listener-hostname-matching.go")
    assert len(cases) == 8, cases
    check_rpcs(grpc_echo, port, cases)


def test_grpcroute_weight(conformance: Conformance, grpc_echo: ModuleType) -> None:
    """70/30/0, judged as the suite does (conformance/utils/weight): 500 RPCs, each backend's
    share within 0.05 of its weight, a few attempts (the suite allows 10)."""
    conformance.only("grpcroute-weight.yaml")
    wanted = {"grpc-infra-backend-v1": 0.7, "grpc-infra-backend-v2": 0.3}
    for _attempt in range(3):
        counts: Counter[str] = Counter()
        with grpc.insecure_channel(f"127.0.0.1:{conformance.port}") as channel:
            for _ in range(500):
                answer = grpc_echo_support.call_echo(grpc_echo, channel=channel)
                assert answer.code == grpc.StatusCode.OK, answer
                counts[answer.pod.rsplit("-", 2)[0]] += 1
        assert set(counts) <= set(wanted), counts  # v3 has weight 0: never
        if all(abs(counts[name] / 500 - share) <= 0.05 for name, share in wanted.items()):
            return
    raise AssertionError(f"not a 70/30 split: {counts}")


# ---- TLSRoute and TCPRoute (Extended): the suite's tcp-backend (tests/support/conformance_tcp.py)


def l4_gateway(conformance: Conformance, documents: list[dict], address: str) -> int:
    """Write a test's documents (its Deployments left out: the backends are loopback
    servers), its Gateway's listener ports moved to free ones (a route's parentRef `port`
    along), and start that Gateway's Envoy (TLS/TCP listeners only: no routes to wait for).
    Returns the first listener's port (``l4_ports`` has them all)."""
    return next(iter(l4_ports(conformance, documents, address).values()))


def l4_ports(conformance: Conformance, documents: list[dict], address: str) -> dict[str, int]:
    """``l4_gateway``'s work; listener name -> its port."""
    [gateway] = [d for d in documents if d["kind"] == "Gateway"]
    moved = {listener["port"]: free_port() for listener in gateway["spec"]["listeners"]}
    for listener in gateway["spec"]["listeners"]:
        listener["port"] = moved[listener["port"]]
    for doc in documents:
        for ref in (
            doc.get("spec", {}).get("parentRefs", []) if doc["kind"].endswith("Route") else []
        ):
            if "port" in ref:
                ref["port"] = moved[ref["port"]]
    kept = [d for d in documents if d["kind"] != "Deployment"]
    conformance.mesh.write("test.yaml", yaml.safe_dump_all(kept))
    name = gateway["metadata"]["name"]
    proxy = conformance.mesh.gateway(
        name,
        namespace=NS,
        labels={"gateway.networking.k8s.io/gateway-name": name},
        address=address,
        wait=False,
    )
    conformance.mesh.debug.wait_synced(proxy.node_id, ("cds", "eds", "lds"), timeout=30)
    proxy.envoy.wait_live()
    ports = {listener["name"]: listener["port"] for listener in gateway["spec"]["listeners"]}
    # An ACKed listener may still be warming (not bound yet): wait until each accepts.
    deadline = time.monotonic() + 10
    for port in ports.values():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return ports


def test_tlsroute_simple_same_namespace(
    conformance: Conformance, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The suite's tcp-backend (base/manifests.yaml) as a TLS server of its own certificate;
    the client completes TLS with it through the passthrough listener and checks what the
    suite checks: a TLS backend, its pod and namespace, the SNI name it saw."""
    workdir = tmp_path_factory.mktemp("tlsroute")
    ca = pki.current_ca("tls-checks-ca")
    cafile = workdir / "ca.pem"
    cafile.write_text(pki.pem(ca[0]))
    cert, key = pki.make_leaf(ca, dns_names=["abc.example.com"], common_name="abc.example.com")
    (workdir / "tls.pem").write_text(pki.pem(cert))
    (workdir / "tls.key").write_text(pki.key_pem(key))
    ip, tls_port = "127.0.0.86", free_port()
    identity = conformance_tcp.Identity(NS, "tcp-backend", "tcp-backend-6c9d8b7f5-abcde")
    server = conformance_tcp.SuiteTcpServer(
        identity, ip, tls_port, workdir / "tls.pem", workdir / "tls.key"
    )
    try:
        [service] = [
            d
            for d in upstream("base/manifests.yaml")
            if d["kind"] == "Service" and d["metadata"]["name"] == "tcp-backend"
        ]
        for port in service["spec"]["ports"]:
            port["targetPort"] = tls_port if port["port"] == 8443 else free_port()
        documents = [
            *upstream("tests/tlsroute-simple-same-namespace.yaml"),
            service,
            yaml.safe_load(meshes.pod("tcp-backend", ip, app="tcp-backend", namespace=NS)),
        ]
        port = l4_gateway(conformance, documents, "127.0.0.87")
        answer = conformance_tcp.exchange(port, "abc.example.com", cafile)
        assert answer["is_tls"] == "true", answer
        assert answer["namespace"] == NS and answer["pod"].startswith("tcp-backend-"), answer
        assert answer["tls"]["serverName"] == "abc.example.com", answer
        status = conformance.mesh.debug.get("/debug/gateway_api_status")
        parent = status[f"TLSRoute {NS}/gateway-conformance-infra-test"]["parents"][0]
        conditions = {c["type"]: c["status"] for c in parent["conditions"]}
        assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}, parent
    finally:
        server.stop()


def test_tcproute_weighted_routing(conformance: Conformance) -> None:
    """70/30/0 over connections, judged as the suite does (500 connections, within 0.05)."""
    ips = {f"tcp-backend-v{i}": f"127.0.0.{100 + i}" for i in (1, 2, 3)}
    target = free_port()
    servers = [
        conformance_tcp.SuiteTcpServer(
            conformance_tcp.Identity(NS, name, f"{name}-7f6d5c4b3-xyz12"), ip, target
        )
        for name, ip in ips.items()
    ]
    try:
        documents = upstream("tests/tcproute-weighted-routing.yaml")
        for doc in documents:
            if doc["kind"] == "Service":
                doc["spec"]["ports"][0]["targetPort"] = target
        documents += [
            yaml.safe_load(meshes.pod(name, ip, app=name, namespace=NS)) for name, ip in ips.items()
        ]
        port = l4_gateway(conformance, documents, "127.0.0.88")
        wanted = {"tcp-backend-v1": 0.7, "tcp-backend-v2": 0.3}
        for _attempt in range(3):
            counts: Counter[str] = Counter(
                conformance_tcp.exchange(port)["pod"].rsplit("-", 2)[0] for _ in range(500)
            )
            assert set(counts) <= set(wanted), counts  # v3 has weight 0: never
            if all(abs(counts[name] / 500 - share) <= 0.05 for name, share in wanted.items()):
                return
        raise AssertionError(f"not a 70/30 split: {counts}")
    finally:
        for server in servers:
            server.stop()


# ---- HTTPRouteHTTPSListener: a mesh of its own, with the CA on (the gateway's SDS) ---------


def https_get(port: int, host: str, cafile: Path) -> tuple[int, str]:
    """GET / over HTTPS with SNI and Host ``host``, verifying the gateway's certificate
    against ``cafile`` (the suite's tls.MakeTLSRequest...): (status, backend name)."""
    context = ssl.create_default_context(cafile=str(cafile))
    # The chain is verified (the self-signed certificate is the only trust anchor); the name
    # is not by OpenSSL, which refuses the certificate's `*.org` (a wildcard right above a
    # top-level domain) where Go's client, the suite's, accepts it.
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    name = json.loads(body)["name"] if status == 200 else ""
    return status, name


@pytest.mark.slow  # a mesh of its own with the CA on: about 20-40 s
def test_httproute_https_listener(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The base `same-namespace-with-https-listener` Gateway (its three HTTPS listeners on
    one free port), the certificate Secret the suite's setup creates
    (`tls-validity-checks-certificate`, self-signed for `*`, `*.org`, `*.wildcard.org`) served
    over SDS, and the test's two HTTPRoutes; the client trusts that certificate, as the suite's
    does, and each case of the test's .go file is checked."""
    from tests.envoy.test_gateway_tls import start_gateway
    from tests.kube.conformance import self_signed_secret

    workdir = tmp_path_factory.mktemp("conformance-https")
    ca_dir = workdir / "ca"
    mesh = LocalMesh(workdir, control_plane_args=["--ca-dir", str(ca_dir)])
    try:
        target = free_port()
        documents: list[dict] = []
        for name in ("infra-backend-v1", "infra-backend-v2"):
            mesh.backend(name, BACKENDS[name], target)
            documents += [
                yaml.safe_load(meshes.service(name, 8080, target_port=target, namespace=NS)),
                yaml.safe_load(meshes.pod(name, BACKENDS[name], app=name, namespace=NS)),
            ]
        secret = self_signed_secret(
            NS, "tls-validity-checks-certificate", ["*", "*.org", "*.wildcard.org"]
        )
        cafile = workdir / "server.pem"
        cafile.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
        port = free_port()
        [gateway] = [
            d
            for d in upstream("base/manifests.yaml")
            if d["kind"] == "Gateway"
            and d["metadata"]["name"] == "same-namespace-with-https-listener"
        ]
        for listener in gateway["spec"]["listeners"]:
            listener["port"] = port
        documents += [secret, gateway, *upstream("tests/httproute-https-listener.yaml")]
        mesh.write("all.yaml", yaml.safe_dump_all(documents))
        mesh.start()
        labels = {"gateway.networking.k8s.io/gateway-name": gateway["metadata"]["name"]}
        node = f"router~127.0.0.89~https-gw-0.{NS}~{NS}.svc.cluster.local"
        proxy = start_gateway(mesh, ca_dir, node, NS, labels, "https-gw")
        mesh.debug.wait_synced(proxy.node_id, types=("cds", "eds", "lds", "rds"), timeout=30)
        proxy.envoy.wait_live()
        text = (gateway_api.conformance_dir() / "tests" / "httproute-https-listener.go").read_text()
        cases = re.findall(
            r'\{host:\s*"([^"]+)",\s*statusCode:\s*(\d+)(?:,\s*backend:\s*confsuite\.InfraBackendServiceNameV(\d))?\}',
            text,
        )
        assert len(cases) == 3, cases
        deadline = time.monotonic() + 10
        while True:  # SDS may still be on its way (the suite: eventually consistent)
            try:
                https_get(port, cases[0][0], cafile)
                break
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for host, code, version in cases:
            expected = (int(code), f"infra-backend-v{version}" if version else "")
            assert https_get(port, host, cafile) == expected, host
    finally:
        mesh.stop()


def test_tcproute_reference_grant(conformance: Conformance) -> None:
    """A TCPRoute to a Service of another namespace reaches it while the ReferenceGrant
    exists; once the test deletes the grant, ResolvedRefs is False (RefNotPermitted) and the
    connection is refused."""
    ip, target = "127.0.0.104", free_port()
    name = "tcp-reference-grant-backend"
    server = conformance_tcp.SuiteTcpServer(
        conformance_tcp.Identity(WEB_NS, name, f"{name}-5b6c7d8e9-qwert"), ip, target
    )
    try:
        documents = upstream("tests/tcproute-reference-grant.yaml")
        for doc in documents:
            if doc["kind"] == "Service":
                doc["spec"]["ports"][0]["targetPort"] = target
        documents.append(yaml.safe_load(meshes.pod(name, ip, app=name, namespace=WEB_NS)))
        port = l4_gateway(conformance, documents, "127.0.0.105")
        answer = conformance_tcp.exchange(port)
        assert answer["namespace"] == WEB_NS and answer["pod"].startswith(f"{name}-"), answer
        node = next(
            g.node_id for g in conformance.mesh.gateways if "tcp-reference-grant" in g.node_id
        )
        before = conformance.mesh.debug.type_state(node, "lds")["acked_version"]
        kept = [d for d in documents if d["kind"] not in ("Deployment", "ReferenceGrant")]
        conformance.mesh.write("test.yaml", yaml.safe_dump_all(kept))
        conformance.mesh.debug.wait_synced(
            node, ("cds", "eds", "lds"), timeout=10, newer_than={"lds": before}
        )
        status = conformance.mesh.debug.get("/debug/gateway_api_status")
        parent = status[f"TCPRoute {NS}/tcp-reference-grant"]["parents"][0]
        resolved = {c["type"]: c for c in parent["conditions"]}["ResolvedRefs"]
        assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted"), parent
        with pytest.raises((OSError, ConnectionError)):
            conformance_tcp.exchange(port)
    finally:
        server.stop()


def suite_tcp_backends(
    documents: list[dict], first_ip: int
) -> tuple[list[conformance_tcp.SuiteTcpServer], list[dict]]:
    """A suite tcp server per Service of a test's documents (loopback 127.0.0.<first_ip>
    on), the Services' target port moved to theirs; the servers and the pods to add."""
    target = free_port()
    servers, pods = [], []
    services = [d for d in documents if d["kind"] == "Service"]
    for i, service in enumerate(services):
        name, ip = service["metadata"]["name"], f"127.0.0.{first_ip + i}"
        service["spec"]["ports"][0]["targetPort"] = target
        identity = conformance_tcp.Identity(NS, name, f"{name}-6b7c8d9f0-abcde")
        servers.append(conformance_tcp.SuiteTcpServer(identity, ip, target))
        pods.append(yaml.safe_load(meshes.pod(name, ip, app=name, namespace=NS)))
    return servers, pods


def test_tcproute_parentref_port_and_section_name(conformance: Conformance) -> None:
    """Three TCP listeners; routes attach by parentRef port, by sectionName, and by both."""
    documents = upstream("tests/tcproute-parentref-port-and-section-name.yaml")
    servers, pods = suite_tcp_backends(documents, 110)
    try:
        ports = l4_ports(conformance, documents + pods, "127.0.0.106")
        for listener, backend in (
            ("one", "tcp-echo-one"),
            ("two", "tcp-echo-two"),
            ("three", "tcp-echo-three"),
        ):
            answer = conformance_tcp.exchange(ports[listener])
            assert answer["pod"].startswith(f"{backend}-"), (listener, answer)
    finally:
        for server in servers:
            server.stop()


def test_tcproute_multiple_routes_attachment(conformance: Conformance) -> None:
    """Two TCPRoutes on one TCP listener: both Accepted, the listener counts 2, and only the
    older one's backend gets connections (the test creates the newer one a second later)."""
    documents = upstream("tests/tcproute-multiple-routes-attachment.yaml")
    servers, pods = suite_tcp_backends(documents, 120)
    try:
        port = l4_gateway(conformance, documents + pods, "127.0.0.107")
        assert conformance_tcp.exchange(port)["pod"].startswith("tcp-attach-backend-1-")
        time.sleep(1.0)  # as the test: the newer route is strictly newer
        conformance.mesh.write(
            "newer-route.yaml",
            yaml.safe_dump(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "TCPRoute",
                    "metadata": {"name": "tcproute-attach-newer", "namespace": NS},
                    "spec": {
                        "parentRefs": [
                            {"name": "tcp-multi-route-attach-gateway", "sectionName": "tcp"}
                        ],
                        "rules": [
                            {"backendRefs": [{"name": "tcp-attach-backend-2", "port": 3000}]}
                        ],
                    },
                }
            ),
        )
        deadline = time.monotonic() + 10
        while True:
            status = conformance.mesh.debug.get("/debug/gateway_api_status")
            gateway = status.get(f"KubernetesGateway {NS}/tcp-multi-route-attach-gateway", {})
            attached = [entry["attachedRoutes"] for entry in gateway.get("listeners", [])]
            if attached == [2] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert attached == [2], gateway
        for route in ("tcproute-attach-older", "tcproute-attach-newer"):
            parent = status[f"TCPRoute {NS}/{route}"]["parents"][0]
            assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "True"
        pods_seen = Counter(
            conformance_tcp.exchange(port)["pod"].rsplit("-", 2)[0] for _ in range(20)
        )
        assert pods_seen == {"tcp-attach-backend-1": 20}, pods_seen
    finally:
        conformance.mesh.remove("newer-route.yaml")
        for server in servers:
            server.stop()


def test_tcproute_parentref_attach_all(conformance: Conformance) -> None:
    """A TCPRoute whose parentRef names the Gateway only attaches to its four TCP listeners:
    each one reaches the route's backend."""
    documents = upstream("tests/tcproute-parentref-attach-all.yaml")
    servers, pods = suite_tcp_backends(documents, 130)
    try:
        ports = l4_ports(conformance, documents + pods, "127.0.0.108")
        assert sorted(ports) == ["four", "one", "three", "two"], ports
        for listener, port in ports.items():
            answer = conformance_tcp.exchange(port)
            assert answer["pod"].startswith("tcp-echo-attach-all-"), (listener, answer)
        status = conformance.mesh.debug.get("/debug/gateway_api_status")
        parent = status[f"TCPRoute {NS}/tcp-route-attach-all"]["parents"][0]
        assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "True"
    finally:
        for server in servers:
            server.stop()


class HttpsEcho:
    """An HTTPS echo backend (the suite's tls-backend): answers JSON naming its pod."""

    def __init__(self, pod: str, host: str, port: int, cert: Path, key: Path) -> None:
        import http.server
        import threading

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"pod": pod, "namespace": NS}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tls_pod(port: int, sni: str, cafile: Path) -> str | None:
    """The pod of the HTTPS backend reached through the passthrough listener with SNI (and
    Host) ``sni``; None when the connection is rejected."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
    except (OSError, ssl.SSLError):
        return None
    pod: str = json.loads(data.partition(b"\r\n\r\n")[2])["pod"]
    return pod


def test_tlsroute_hostname_intersection(
    conformance: Conformance, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Four Gateways (a TLS listener each: exact, more and less specific wildcard, no
    hostname) and the test's TLSRoutes: the SNI names of the test's .go file reach
    tls-backend or tls-backend-2 as the route hostnames intersect the listener's, and a name
    outside the intersection is rejected."""
    workdir = tmp_path_factory.mktemp("tlsroute-intersection")
    ca = pki.current_ca("tls-checks-ca")
    cafile = workdir / "ca.pem"
    cafile.write_text(pki.pem(ca[0]))
    cert, key = pki.make_leaf(ca, dns_names=["abc.example.com", "*.example.com"], common_name="tls")
    (workdir / "tls.pem").write_text(pki.pem(cert))
    (workdir / "tls.key").write_text(pki.key_pem(key))
    target = free_port()
    ips = {"tls-backend": "127.0.0.140", "tls-backend-2": "127.0.0.141"}
    servers = [
        HttpsEcho(f"{name}-7d8e9f0a1-zxcvb", ip, target, workdir / "tls.pem", workdir / "tls.key")
        for name, ip in ips.items()
    ]
    try:
        documents = upstream("tests/tlsroute-hostname-intersection.yaml")
        for name, ip in ips.items():
            documents += [
                yaml.safe_load(meshes.service(name, 443, target_port=target, namespace=NS)),
                yaml.safe_load(meshes.pod(name, ip, app=name, namespace=NS)),
            ]
        gateways = [d for d in documents if d["kind"] == "Gateway"]
        ports = {}
        for gateway in gateways:
            ports[gateway["metadata"]["name"]] = free_port()
            gateway["spec"]["listeners"][0]["port"] = ports[gateway["metadata"]["name"]]
        conformance.mesh.write("test.yaml", yaml.safe_dump_all(documents))
        for i, name in enumerate(ports):
            proxy = conformance.mesh.gateway(
                name,
                namespace=NS,
                labels={"gateway.networking.k8s.io/gateway-name": name},
                address=f"127.0.0.{150 + i}",
                wait=False,
            )
            conformance.mesh.debug.wait_synced(proxy.node_id, ("cds", "eds", "lds"), timeout=30)
        exact, more, less, empty = ports.values()
        cases = [
            (exact, "abc.example.com", "tls-backend"),
            (exact, "non.matching.com", None),
            (more, "abc.example.com", "tls-backend"),
            (more, "other.example.com", "tls-backend-2"),
            (more, "non.matching.com", None),
            (less, "abc.example.com", "tls-backend"),
            (less, "other.example.com", "tls-backend-2"),
            (less, "non.matching.com", None),
            (empty, "abc.example.com", "tls-backend"),
            (empty, "other.example.com", "tls-backend-2"),
        ]
        for port, sni, backend in cases:
            deadline = time.monotonic() + 10
            while True:  # eventually consistent, as the suite's requests
                pod = tls_pod(port, sni, cafile)
                found = pod.rsplit("-", 2)[0] if pod else None
                if found == backend or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert found == backend, (port, sni, pod)
    finally:
        for server in servers:
            server.stop()
