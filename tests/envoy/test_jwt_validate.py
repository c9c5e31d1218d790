"""A key set Envoy would refuse never reaches a sidecar: whatever the issuer serves (or an
inline ``jwks`` that slipped past validation), the compiled listener passes Envoy's own
validator (``envoy --mode validate``), the bad issuer's provider gets the fail-closed key, and
the other issuers keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.api.request_authn import JwksKeySetSpec
from controlplane.compile import SnapshotCompiler
from controlplane.compile.jwt import PUBLIC_ONLY_JWKS
from tests.envoy.validate import envoy_validate, static_bootstrap
from tests.support.jwt import jwks
from tests.unit.compile.helpers import as_dict
from tests.unit.compile.test_jwt import SERVICE, api_proxy, ra, with_key_sets

pytestmark = pytest.mark.envoy

URI = "https://bad.test/jwks.json"
REFUSED_BY_ENVOY = {
    "empty": '{"keys": []}',
    "single-jwk": json.dumps({"kty": "oct", "k": "AQAB"}),
    "short-rsa": json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
    "ec-off-curve": json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}),
    "alg-mismatch": json.dumps({"keys": [{**json.loads(jwks("a"))["keys"][0], "alg": "ES256"}]}),
    "unknown-curve": json.dumps({"keys": [{"kty": "EC", "crv": "P-999", "x": "AQ", "y": "AQ"}]}),
    "html": "<html>sign in</html>",
}


@pytest.mark.parametrize("body", REFUSED_BY_ENVOY.values(), ids=REFUSED_BY_ENVOY.keys())
def test_a_key_set_envoy_refuses_fails_closed_for_its_issuer_only(
    tmp_path: Path, body: str
) -> None:
    good = ra("good", f"  jwtRules: [{{issuer: good.test, jwks: '{jwks('g')}'}}]")
    bad = ra("bad", f"  jwtRules: [{{issuer: bad.test, jwksUri: '{URI}'}}]")
    snapshot = with_key_sets([SERVICE, good, bad], JwksKeySetSpec(uri=URI, jwks=body))
    resources = SnapshotCompiler(snapshot).compile(api_proxy())
    result = envoy_validate(static_bootstrap(resources), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    listener = next(
        as_dict(r.message)
        for rs in resources.by_type.values()
        for n, r in rs.items()
        if n == "127.0.5.30_8080"
    )
    [chain] = listener["filterChains"]
    providers = chain["filters"][0]["typedConfig"]["httpFilters"][0]["typedConfig"]["providers"]
    by_issuer = {p["issuer"]: p["localJwks"]["inlineString"] for p in providers.values()}
    assert by_issuer == {"bad.test": PUBLIC_ONLY_JWKS, "good.test": jwks("g")}


def test_the_fail_closed_key_set_itself_is_valid_for_envoy(tmp_path: Path) -> None:
    snapshot = with_key_sets([SERVICE, ra("r", f"  jwtRules: [{{issuer: x, jwksUri: '{URI}'}}]")])
    result = envoy_validate(
        static_bootstrap(SnapshotCompiler(snapshot).compile(api_proxy())), tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
