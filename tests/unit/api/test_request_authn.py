"""RequestAuthentication validation, as istiod's webhook and CRD rules decide it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.api import InvalidResource, load
from controlplane.api.request_authn import RequestAuthentication
from tests.support.jwt import jwks, rsa_jwk


def doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "jwt", "namespace": "default"},
        "spec": spec,
    }


def refused(spec: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(InvalidResource) as caught:
        load(doc(spec))
    return {(i.path, i.reason) for i in caught.value.issues}


def test_every_field_istio_defines_is_read() -> None:
    rule = {
        "issuer": "https://a.test",
        "audiences": ["api"],
        "jwksUri": "https://a.test/keys",
        "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
        "fromParams": ["token"],
        "fromCookies": ["session"],
        "outputPayloadToHeader": "x-payload",
        "forwardOriginalToken": True,
        "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
        "spaceDelimitedClaims": ["roles"],
        "timeout": "3s",
    }
    resource, issues = load(doc({"selector": {"matchLabels": {"app": "api"}}, "jwtRules": [rule]}))
    assert isinstance(resource, RequestAuthentication)
    assert issues == []
    [parsed] = resource.spec.jwt_rules
    assert parsed.uri == "https://a.test/keys" and parsed.timeout == 3.0


def test_the_deprecated_jwks_uri_spelling_is_read() -> None:
    resource, _ = load(doc({"jwtRules": [{"issuer": "a", "jwks_uri": "http://a.test/k"}]}))
    assert isinstance(resource, RequestAuthentication)
    assert resource.spec.jwt_rules[0].uri == "http://a.test/k"


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({}, "spec.jwtRules[0].issuer"),  # issuer or jwksUri
        ({"issuer": "a", "audiences": [""]}, "spec.jwtRules[0].audiences[0]"),
        ({"issuer": "a", "jwksUri": "file:///etc/keys"}, "spec.jwtRules[0].jwksUri"),
        ({"issuer": "a", "jwksUri": "https://"}, "spec.jwtRules[0].jwksUri"),
        ({"issuer": "a", "jwks": "{"}, "spec.jwtRules[0].jwks"),
        ({"issuer": "a", "jwks": '{"keys": [{"kty": "RSA"}]}'}, "spec.jwtRules[0].jwks"),
        ({"issuer": "a", "fromHeaders": [{"name": ""}]}, "spec.jwtRules[0].fromHeaders[0].name"),
        ({"issuer": "a", "fromParams": [""]}, "spec.jwtRules[0].fromParams[0]"),
        ({"issuer": "a", "fromCookies": [""]}, "spec.jwtRules[0].fromCookies[0]"),
        (
            {"issuer": "a", "outputClaimToHeaders": [{"header": "x-a", "claim": ""}]},
            "spec.jwtRules[0].outputClaimToHeaders[0]",
        ),
        (
            {"issuer": "a", "outputClaimToHeaders": [{"header": "x:a", "claim": "sub"}]},
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
        ),
        ({"issuer": "a", "timeout": "0.5ms"}, "spec.jwtRules[0].timeout"),
    ],
)
def test_a_rule_istiod_refuses_is_refused_at_its_field(rule: dict[str, Any], path: str) -> None:
    assert path in {p for p, _ in refused({"jwtRules": [rule]})}


def test_jwks_and_jwks_uri_are_exclusive() -> None:
    rule = {"issuer": "a", "jwks": jwks("a"), "jwksUri": "https://a.test/k"}
    assert ("spec.jwtRules[0].jwks", "only one of jwks or jwksUri can be set") in refused(
        {"jwtRules": [rule]}
    )


def test_selector_and_target_refs_are_exclusive() -> None:
    spec = {
        "selector": {"matchLabels": {"app": "a"}},
        "targetRefs": [{"kind": "Gateway", "name": "gw"}],
        "jwtRules": [{"issuer": "a"}],
    }
    assert ("spec", "only one of targetRefs or selector can be set") in refused(spec)


def test_private_key_material_in_jwks_is_a_warning() -> None:
    key = {**rsa_jwk("a"), "d": "AQAB"}
    _, issues = load(doc({"jwtRules": [{"issuer": "a", "jwks": json.dumps({"keys": [key]})}]}))
    [warning] = issues
    assert warning.path == "spec.jwtRules[0].jwks" and "private key material" in warning.reason
