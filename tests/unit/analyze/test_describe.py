"""`controlplane describe pod|service`: on the bookinfo mesh, what applies to a workload (a
canary VirtualService, DestinationRule subsets, STRICT mTLS, an ALLOW policy), its identity,
and which resources written for it were refused and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.analyze.describe import describe_pod, describe_service
from controlplane.analyze.loading import load_paths
from controlplane.cli.main import main
from tests.support.meshes import bookinfo, jason_to_v2, join, pod, resource, split

STRICT_MESH = resource(
    "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system"
)
REVIEWS_VIEWER = resource(
    "AuthorizationPolicy",
    "reviews-viewer",
    {
        "selector": {"matchLabels": {"app": "reviews"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [
                    {"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}
                ]
            }
        ],
    },
)
# Applies to another workload: describe of reviews must not list it.
RATINGS_VIEWER = resource(
    "AuthorizationPolicy",
    "ratings-viewer",
    {"selector": {"matchLabels": {"app": "ratings"}}, "action": "ALLOW", "rules": [{}]},
)

BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-broken, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
      weight: -5
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - when:
    - key: request.headers[x-test]
      valuez: ["1"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: details-pa, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: STRICTEST}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "bookinfo.yaml").write_text(bookinfo())
    (root / "routing.yaml").write_text(
        join(
            split("reviews", {"v1": 90, "v2": 10}, first=[jason_to_v2()]),
            STRICT_MESH,
            REVIEWS_VIEWER,
            RATINGS_VIEWER,
        )
    )
    return root


def test_describe_pod_shows_the_canary_routes_subsets_mtls_policy_and_identity(
    mesh: Path,
) -> None:
    described = describe_pod(load_paths([mesh]), "reviews-v1")
    assert described["pod"]["identity"] == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    [svc] = described["services"]
    assert svc["host"] == "reviews.default.svc.cluster.local"
    dr = svc["destinationRule"]
    assert dr["resources"] == ["DestinationRule default/reviews"]
    assert [(s["name"], s["matchesPod"]) for s in dr["subsets"]] == [
        ("v1", True),
        ("v2", False),
        ("v3", False),
    ]
    vs = svc["virtualService"]
    assert vs["resource"] == "VirtualService default/reviews"
    jason, default = vs["routes"]
    assert jason["match"] == ['{"headers":{"end-user":{"exact":"jason"}}}']
    assert [(d["subset"], d["weight"], d["thisPod"]) for d in jason["destinations"]] == [
        ("v2", 100, False)
    ]
    assert [
        (d["subset"], d["weight"], d["percent"], d["thisPod"]) for d in default["destinations"]
    ] == [
        ("v1", 90, 90.0, True),
        ("v2", 10, 10.0, False),
    ]
    assert described["mtls"] == {
        "mode": "STRICT",
        "portModes": {},
        "policies": ["PeerAuthentication istio-system/default"],
    }
    assert described["authorization"] == {"ALLOW": ["AuthorizationPolicy default/reviews-viewer"]}
    assert described["refused"] == []
    assert described["sidecar"] is None


def test_describe_pod_text_reads_like_istioctl(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["describe", "pod", "reviews-v2", "-d", str(mesh)]) == 0
    out = capsys.readouterr().out
    assert "Pod: reviews-v2.default" in out
    assert "Identity: spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in out
    assert "Matching subsets: v2\n   (Non-matching subsets: v1, v3)" in out
    assert "90% -> reviews subset v1 (weight 90)\n" in out
    assert "10% -> reviews subset v2 (weight 10)   <- this pod" in out
    assert "100% -> reviews subset v2 (weight 100)   <- this pod" in out
    assert "Workload mTLS mode: STRICT" in out
    assert "ALLOW: AuthorizationPolicy default/reviews-viewer" in out
    assert "ratings-viewer" not in out


def test_describe_pod_lists_what_was_refused_for_it_and_why(mesh: Path) -> None:
    (mesh / "broken.yaml").write_text(BROKEN)
    described = describe_pod(load_paths([mesh]), "reviews-v1")
    refused = {r["resource"]: r for r in described["refused"]}
    # The broken PeerAuthentication selects details, not reviews.
    assert set(refused) == {
        "AuthorizationPolicy default/reviews-deny",
        "VirtualService default/reviews-broken",
    }
    vs = refused["VirtualService default/reviews-broken"]
    assert vs["origin"] == f"{mesh / 'broken.yaml'}:1"
    assert vs["reasons"] == [
        "[CP0201 InvalidField] spec.http[0].route[0].weight: must not be negative"
    ]
    assert vs["effect"] == "nothing of it reaches the proxies"
    deny = refused["AuthorizationPolicy default/reviews-deny"]
    assert any("spec.rules[0].when[0].valuez: unknown field" in r for r in deny["reasons"])
    assert "deny all requests" in deny["effect"]  # a refused DENY fails closed (CP0203)
    details = describe_pod(load_paths([mesh]), "details-v1")
    assert [r["resource"] for r in details["refused"]] == ["PeerAuthentication default/details-pa"]
    assert "STRICT" in details["refused"][0]["effect"]


def test_describe_service_lists_pods_by_subset_and_the_routes(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    described = describe_service(load_paths([mesh]), "reviews")["service"]
    assert described["pods"] == [
        {"name": "reviews-v1", "subsets": ["v1"]},
        {"name": "reviews-v2", "subsets": ["v2"]},
        {"name": "reviews-v3", "subsets": ["v3"]},
    ]
    assert main(["describe", "svc", "reviews.default", "-d", str(mesh), "-o", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    routes = as_json["service"]["virtualService"]["routes"]
    assert [d["weight"] for d in routes[1]["destinations"]] == [90, 10]


def test_a_second_virtual_service_for_the_host_is_named_as_shadowed(mesh: Path) -> None:
    later = resource(
        "VirtualService",
        "reviews-later",
        {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    )
    (mesh / "later.yaml").write_text(later)
    described = describe_pod(load_paths([mesh]), "reviews-v1")
    vs = described["services"][0]["virtualService"]
    assert vs["resource"] == "VirtualService default/reviews"
    assert vs["shadowed"] == ["VirtualService default/reviews-later"]


def test_an_unknown_pod_is_an_error(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "pod", "nope", "-d", str(mesh)]) == 1
    assert "pod default/nope not found" in capsys.readouterr().err


def test_describe_a_gateway_pod_names_the_gateways_it_serves(mesh: Path) -> None:
    (mesh / "gateway.yaml").write_text(
        join(
            resource(
                "Gateway",
                "reviews-gateway",
                {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [
                        {
                            "port": {"number": 8080, "name": "http", "protocol": "HTTP"},
                            "hosts": ["reviews.example.com"],
                        }
                    ],
                },
            ),
            pod("ingressgateway-1", "10.0.0.100", labels={"istio": "ingressgateway"}),
        )
    )
    described = describe_pod(load_paths([mesh]), "ingressgateway-1")
    assert described["pod"]["proxyType"] == "router"
    assert described["gateways"] == ["Gateway default/reviews-gateway"]
    [entry] = described["gatewayRoutes"]
    assert entry["servers"] == [
        {"port": 8080, "protocol": "HTTP", "hosts": ["reviews.example.com"]}
    ]
    assert entry["virtualServices"] == []  # the mesh's reviews route is not bound to it
    (mesh / "ingress-vs.yaml").write_text(
        resource(
            "VirtualService",
            "reviews-ingress",
            {
                "hosts": ["reviews.example.com"],
                "gateways": ["reviews-gateway"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 75},
                            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 25},
                        ]
                    }
                ],
            },
        )
    )
    [entry] = describe_pod(load_paths([mesh]), "ingressgateway-1")["gatewayRoutes"]
    [vs] = entry["virtualServices"]
    assert vs["resource"] == "VirtualService default/reviews-ingress"
    assert [(d["subset"], d["weight"]) for d in vs["routes"][0]["destinations"]] == [
        ("v1", 75),
        ("v2", 25),
    ]
    assert describe_pod(load_paths([mesh]), "reviews-v1")["gateways"] == []


def test_a_pod_no_route_reaches_is_warned_about_as_istioctl_does(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # reviews-v3 is in subset v3, which no route of the canary names.
    described = describe_pod(load_paths([mesh]), "reviews-v3")
    assert described["services"][0]["virtualService"]["reachesPod"] is False
    assert describe_pod(load_paths([mesh]), "reviews-v2")["services"][0]["virtualService"][
        "reachesPod"
    ]
    assert main(["describe", "pod", "reviews-v3", "-d", str(mesh)]) == 0
    assert (
        "WARNING: No destinations match pod subsets (checked 2 routes)" in capsys.readouterr().out
    )


def test_describe_shows_what_the_sidecar_lets_the_pod_call(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mesh / "sidecar.yaml").write_text(
        resource(
            "Sidecar",
            "ratings",
            {
                "workloadSelector": {"labels": {"app": "ratings"}},
                "egress": [{"hosts": ["./details.default.svc.cluster.local"]}],
            },
        )
    )
    loaded = load_paths([mesh])
    ratings = describe_pod(loaded, "ratings-v1")
    assert ratings["sidecar"] == "Sidecar default/ratings"
    assert ratings["outbound"] == ["details.default.svc.cluster.local"]
    assert len(describe_pod(loaded, "productpage-v1")["outbound"]) == 4
    assert main(["describe", "pod", "ratings-v1", "-d", str(mesh)]) == 0
    out = capsys.readouterr().out
    assert (
        "Sidecar: Sidecar default/ratings\n   Outbound services: details.default.svc.cluster.local\n"
        in out
    )


def test_describe_names_the_telemetries_and_what_each_side_logs_and_traces(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mesh / "mesh.yaml").write_text(
        "extensionProviders:\n"
        "- name: zipkin\n"
        "  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n"
    )
    (mesh / "telemetry.yaml").write_text(
        join(
            resource(
                "Telemetry",
                "mesh-default",
                {"accessLogging": [{"providers": [{"name": "envoy"}]}]},
                namespace="istio-system",
            ),
            resource(
                "Telemetry",
                "reviews",
                {
                    "selector": {"matchLabels": {"app": "reviews"}},
                    "accessLogging": [
                        {
                            "providers": [{"name": "envoy"}],
                            "disabled": True,
                            "match": {"mode": "SERVER"},
                        }
                    ],
                },
            ),
        )
    )
    described = describe_pod(load_paths([mesh]), "reviews-v1")
    assert described["telemetry"]["resources"] == [
        "Telemetry istio-system/mesh-default",
        "Telemetry default/reviews",
    ]
    assert described["telemetry"]["outbound"]["accessLogs"] == ["/dev/stdout (text)"]
    assert described["telemetry"]["inbound"]["accessLogs"] == []
    assert main(["describe", "pod", "reviews-v1", "-d", str(mesh)]) == 0
    out = capsys.readouterr().out
    assert "Telemetry: Telemetry istio-system/mesh-default, Telemetry default/reviews\n" in out
    assert "   inbound: access logs none; tracing off\n" in out
