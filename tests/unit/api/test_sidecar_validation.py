"""Sidecar validation: the verdicts of istiod's ValidateSidecar (pkg/config/validation), with
this project's field paths; errors refuse the resource, warnings are reported."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.api import InvalidResource, load
from controlplane.api.issues import Level


def sidecar(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Sidecar",
        "metadata": {"name": "s", "namespace": "shop"},
        "spec": spec,
    }


def errors_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        load(sidecar(spec))
    except InvalidResource as exc:
        return [(i.path, i.reason) for i in exc.issues]
    return []


def warnings_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    _, issues = load(sidecar(spec))
    return [(i.path, i.reason) for i in issues if i.severity is Level.WARNING]


@pytest.mark.parametrize(
    "spec",
    [
        {"egress": [{"hosts": ["./*", "istio-system/*"]}]},
        {"egress": [{"hosts": ["*/reviews.default.svc.cluster.local", "~/*.internal.example"]}]},
        {
            "egress": [
                {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "hosts": ["ns1/*"]},
                {"hosts": ["./*"]},
            ]
        },
        {
            "egress": [
                {
                    "port": {"number": 0, "protocol": "HTTP"},
                    "bind": "unix:///var/run/x.sock",
                    "hosts": ["./*"],
                }
            ]
        },
        {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
        {
            "outboundTrafficPolicy": {
                "mode": "ALLOW_ANY",
                "egressProxy": {"host": "proxy.example.com", "port": {"number": 3128}},
            }
        },
        {
            "ingress": [
                {
                    "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                    "defaultEndpoint": "127.0.0.1:8080",
                }
            ]
        },
        {
            "ingress": [
                {
                    "port": {"number": 9080, "protocol": "HTTP"},
                    "defaultEndpoint": "unix:///var/run/app.sock",
                }
            ]
        },
        {"workloadSelector": {"labels": {"app": "web"}}, "egress": [{"hosts": ["./*"]}]},
    ],
)
def test_what_istiod_accepts_is_accepted(spec: dict[str, Any]) -> None:
    assert errors_of(spec) == []


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({}, "spec", "empty configuration provided"),
        ({"egress": [{"hosts": []}]}, "spec.egress[0].hosts", "must contain at least one host"),
        ({"egress": [{"hosts": ["reviews"]}]}, "spec.egress[0].hosts[0]", "namespace/dnsName"),
        ({"egress": [{"hosts": ["./reviews"]}]}, "spec.egress[0].hosts[0]", "short names"),
        ({"egress": [{"hosts": ["BAD/*"]}]}, "spec.egress[0].hosts[0]", "invalid namespace"),
        (
            {"egress": [{"hosts": ["./*"]}, {"hosts": ["./*"]}]},
            "spec.egress[0]",
            "should be the last",
        ),
        (
            {
                "egress": [
                    {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["./*"]},
                    {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["./*"]},
                ]
            },
            "spec.egress[1].port",
            "must be unique",
        ),
        (
            {"egress": [{"port": {"number": 80, "protocol": "BOGUS"}, "hosts": ["./*"]}]},
            "spec.egress[0].port.protocol",
            "unsupported protocol",
        ),
        (
            {
                "egress": [
                    {
                        "port": {"number": 80, "protocol": "HTTP"},
                        "bind": "not-an-ip",
                        "hosts": ["./*"],
                    }
                ]
            },
            "spec.egress[0].bind",
            "not a valid IP",
        ),
        (
            {"egress": [{"port": {"number": 0, "protocol": "HTTP"}, "hosts": ["./*"]}]},
            "spec.egress[0].bind",
            "unix domain socket",
        ),
        (
            {"egress": [{"port": {"number": 80, "targetPort": 8080}, "hosts": ["./*"]}]},
            "spec.egress[0].port.targetPort",
            "no impact",
        ),
        (
            {"ingress": [{"defaultEndpoint": "127.0.0.1:80"}]},
            "spec.ingress[0].port",
            "port is required",
        ),
        (
            {
                "ingress": [
                    {"port": {"number": 80, "protocol": "HTTP"}, "defaultEndpoint": "10.0.0.1:80"}
                ]
            },
            "spec.ingress[0].defaultEndpoint",
            "must be of form",
        ),
        (
            {"ingress": [{"port": {"number": 80, "protocol": "HTTP"}, "tls": {"mode": "SIMPLE"}}]},
            "spec.ingress[0].tls",
            "non HTTPS/TLS",
        ),
        (
            {
                "ingress": [
                    {"port": {"number": 443, "protocol": "HTTPS"}, "tls": {"mode": "ISTIO_MUTUAL"}}
                ]
            },
            "spec.ingress[0].tls.mode",
            "ISTIO_MUTUAL",
        ),
        (
            {"outboundTrafficPolicy": {"mode": "ALLOW_ANY_DYNAMIC_DNS"}},
            "spec.outboundTrafficPolicy.mode",
            "only supported in MeshConfig",
        ),
        (
            {
                "outboundTrafficPolicy": {
                    "mode": "ALLOW_ANY",
                    "egressProxy": {"host": "proxy.example.com"},
                }
            },
            "spec.outboundTrafficPolicy.egressProxy.port",
            "must be non-nil",
        ),
        (
            {"workloadSelector": {"labels": {"app": "*"}}, "egress": [{"hosts": ["./*"]}]},
            "spec.workloadSelector.labels.app",
            "wildcard",
        ),
    ],
)
def test_what_istiod_refuses_is_refused_with_the_field_path(
    spec: dict[str, Any], path: str, reason: str
) -> None:
    found = errors_of(spec)
    assert any(p == path and reason in r for p, r in found), found


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        (
            {"workloadSelector": {}, "egress": [{"hosts": ["./*"]}]},
            "spec.workloadSelector",
            "without labels",
        ),
        (
            {"egress": [{"hosts": ["./*", "shop/*"]}]},
            "spec.egress[0].hosts[1]",
            "duplicated egress host",
        ),
        (
            {"egress": [{"hosts": ["*/*", "shop/a.example.com"]}]},
            "spec.egress[0].hosts",
            "`*/*` host select all",
        ),
        (
            {
                "egress": [
                    {
                        "bind": "127.0.0.1",
                        "port": {"number": 81, "protocol": "HTTP"},
                        "hosts": ["./*"],
                    }
                ]
            },
            "spec.egress[0].bind",
            "not supported yet",
        ),
    ],
)
def test_what_istiod_warns_about_is_a_warning(spec: dict[str, Any], path: str, reason: str) -> None:
    found = warnings_of(spec)
    assert any(p == path and reason in r for p, r in found), found
