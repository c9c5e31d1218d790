"""Through a real Envoy: VirtualService matches (headers, URI exact/prefix/regex, method, query
parameters, first match wins), rewrite, redirect, header operations, CORS and mirroring."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from controlplane.testing.traffic import send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, traffic_mesh, wait_until
from tests.support import meshes

HOST = "reviews:8080"

DESTINATION_RULE = meshes.resource(
    "DestinationRule",
    "reviews",
    """
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
""",
)

VIRTUAL_SERVICE = meshes.resource(
    "VirtualService",
    "reviews",
    """
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: uris
    match:
    - {uri: {exact: /exact}}
    - {uri: {regex: "/items/[0-9]+"}}
    - {uri: {prefix: /v3}}
    - {uri: {prefix: /orders}, method: {exact: POST}}
    - {queryParams: {version: {exact: "3"}}}
    - {uri: {prefix: /case}, ignoreUriCase: true}
    route: [{destination: {host: reviews, subset: v3}}]
  - name: host-header
    match: [{uri: {prefix: /host-header}}]
    headers: {request: {set: {host: via-header.example}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: rewrite
    match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: rewritten.example}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: redirect
    match: [{uri: {prefix: /moved}}]
    redirect: {uri: /here, authority: elsewhere.example, redirectCode: 302}
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request:
        set: {x-set: by-mesh}
        add: {x-add: by-mesh}
        remove: [x-remove]
      response:
        set: {x-resp-set: by-mesh}
        add: {x-resp-add: by-mesh}
        remove: [x-backend]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://ok.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      maxAge: 60s
    route: [{destination: {host: reviews, subset: v1}}]
  - name: mirror
    match: [{uri: {prefix: /mirror}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""",
)


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {
        "reviews": [
            Pod(f"reviews-v{i}", f"127.0.4.{10 + i}", {"version": f"v{i}"}) for i in (1, 2, 3)
        ],
        "shadow": [Pod("shadow", "127.0.4.14")],
    }
    config = {"dr.yaml": DESTINATION_RULE, "vs.yaml": VIRTUAL_SERVICE}
    with traffic_mesh(tmp_path_factory.mktemp("routing"), services, config) as mesh:
        yield mesh


def served_by(mesh: TrafficMesh, path: str = "/", **kwargs: object) -> str:
    status, headers, body = send(mesh.port, HOST, path, **kwargs)  # type: ignore[arg-type]
    assert status == 200, (status, body)
    return str(json.loads(body)["name"])


def test_end_user_jason_goes_to_v2_and_everyone_else_to_v1(routing: TrafficMesh) -> None:
    jason = Counter(served_by(routing, headers={"end-user": "jason"}) for _ in range(30))
    others = Counter(served_by(routing, headers={"end-user": "mary"}) for _ in range(30))
    assert jason == {"reviews-v2": 30}
    assert others == {"reviews-v1": 30}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/exact", "reviews-v3"),
        ("/exact/more", "reviews-v1"),  # exact is not a prefix
        ("/items/42", "reviews-v3"),
        ("/items/x42", "reviews-v1"),  # the regex must match the whole path
        ("/v3/anything", "reviews-v3"),
        ("/v4", "reviews-v1"),
        ("/?version=3", "reviews-v3"),
        ("/?version=4", "reviews-v1"),
        ("/CaSe/x", "reviews-v3"),  # ignoreUriCase
        ("/v3".upper(), "reviews-v1"),  # other prefixes stay case-sensitive
    ],
)
def test_uri_and_query_parameter_matches_pick_the_route(
    routing: TrafficMesh, path: str, expected: str
) -> None:
    assert served_by(routing, path) == expected


def test_method_match_routes_post_but_not_get(routing: TrafficMesh) -> None:
    assert served_by(routing, "/orders", method="POST", body=b"{}") == "reviews-v3"
    assert served_by(routing, "/orders", method="GET") == "reviews-v1"


def test_the_first_matching_route_wins(routing: TrafficMesh) -> None:
    # /v3 matches the v3 route, but the jason route comes first.
    assert served_by(routing, "/v3", headers={"end-user": "jason"}) == "reviews-v2"


def test_rewrite_changes_the_path_prefix_and_the_authority(routing: TrafficMesh) -> None:
    status, _, body = send(routing.port, HOST, "/old/page?x=1")
    seen = json.loads(body)
    assert status == 200 and seen["name"] == "reviews-v1"
    assert seen["path"] == "/new/page?x=1"
    assert seen["headers"]["host"] == "rewritten.example"


def test_setting_the_host_header_rewrites_the_authority(routing: TrafficMesh) -> None:
    status, _, body = send(routing.port, HOST, "/host-header")
    assert status == 200 and json.loads(body)["headers"]["host"] == "via-header.example"


def test_redirect_answers_from_envoy_without_reaching_a_backend(routing: TrafficMesh) -> None:
    before = sum(b.count() for b in routing.backends.values())
    status, headers, _ = send(routing.port, HOST, "/moved/page")
    assert status == 302
    assert headers["location"] == "http://elsewhere.example/here"
    assert sum(b.count() for b in routing.backends.values()) == before


def test_request_and_response_headers_are_set_added_and_removed(routing: TrafficMesh) -> None:
    status, headers, body = send(
        routing.port,
        HOST,
        "/headers",
        headers={"x-set": "by-client", "x-add": "by-client", "x-remove": "secret"},
    )
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["x-set"] == "by-mesh"  # overwritten
    assert seen["x-add"] == "by-client,by-mesh"  # appended
    assert "x-remove" not in seen
    assert headers["x-resp-set"] == "by-mesh"
    assert headers["x-resp-add"] == "by-mesh"
    assert "x-backend" not in headers


def test_cors_preflight_is_answered_by_envoy_for_an_allowed_origin(routing: TrafficMesh) -> None:
    v1 = routing.backends["reviews-v1"]
    before = v1.count()
    preflight = {
        "origin": "https://ok.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-custom",
    }
    status, headers, _ = send(routing.port, HOST, "/cors", method="OPTIONS", headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://ok.example"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-headers"] == "x-custom"
    assert headers["access-control-max-age"] == "60"
    assert v1.count() == before  # the preflight never reached the application
    # An origin that is not allowed gets no CORS headers (its preflight goes to the app).
    other = {**preflight, "origin": "https://evil.example"}
    _, headers, _ = send(routing.port, HOST, "/cors", method="OPTIONS", headers=other)
    assert "access-control-allow-origin" not in headers
    # The actual request from the allowed origin carries the allow-origin header back.
    status, headers, _ = send(routing.port, HOST, "/cors", headers={"origin": "https://ok.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://ok.example"


def test_mirrored_requests_reach_the_shadow_while_responses_come_from_the_primary(
    routing: TrafficMesh,
) -> None:
    shadow = routing.backends["shadow"]
    shadow.reset()
    answers = Counter(served_by(routing, f"/mirror/{i}") for i in range(20))
    assert answers == {"reviews-v1": 20}
    assert wait_until(lambda: shadow.count() >= 20), shadow.count()
    paths = sorted(r.path for r in shadow.requests)
    assert paths == sorted(f"/mirror/{i}" for i in range(20))
    # Envoy marks mirrored requests by suffixing the host name of the authority.
    assert {r.headers["host"] for r in shadow.requests} == {"reviews-shadow:8080"}
