"""RequestAuthentication enforced by a real Envoy sidecar, with tokens this test signs and an
issuer (a JWKS server) this test runs on loopback and whose keys it rotates and takes down.

The workload ``api`` accepts tokens of two issuers: ``https://issuer.test`` (keys fetched by
the control plane from the loopback JWKS server) and ``inline.test`` (keys inline, token in
the ``x-token`` header or the ``token`` query parameter). An AuthorizationPolicy lets anyone
reach ``/open``, needs a request principal for ``/secure``, the principal of one subject for
``/mine`` and the claim ``group: admins`` for ``/admin``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from controlplane.testing.backends import Backend
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port

pytestmark = pytest.mark.envoy

POD, APP = "127.0.8.10", "127.0.8.110"
NODE = f"sidecar~{POD}~api-1.default~default.svc.cluster.local"
ISSUER = "https://issuer.test"
INLINE_ISSUER = "inline.test"
REFRESH = 1.0  # the control plane's --jwks-refresh-interval here (s)


# ---- keys, tokens and the issuer --------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**found, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, issuer: str = ISSUER, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": issuer, "sub": "alice", "aud": "api", "iat": now, "exp": now + 600}
        body.update(claims)
        return jwt.encode(body, self.private, algorithm="RS256", headers={"kid": self.kid})


def jwks_of(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


class Issuer:
    """A JWKS server on loopback: serves the current key set, or fails while ``down``."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.down = False
        self.requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                issuer.requests += 1
                if issuer.down:
                    status, body = 503, b"down"
                else:
                    status, body = 200, jwks_of(*issuer.keys).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the mesh ---------------------------------------------------------------------------------


def workload_yaml(app_port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 9080, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: api-1
  namespace: default
  labels: {{app: api}}
spec: {{serviceAccountName: api}}
status: {{podIP: {POD}}}
"""


def request_authentication(jwks_uri: str, inline_jwks: str) -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: api-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: {jwks_uri}
    audiences: [api]
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
    outputPayloadToHeader: x-jwt-payload
  - issuer: {INLINE_ISSUER}
    jwks: '{inline_jwks}'
    fromHeaders: [{{name: x-token}}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
"""


AUTHORIZATION = f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: api, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  rules:
  - to: [{{operation: {{paths: [/open]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: [/secure]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
    to: [{{operation: {{paths: [/mine]}}}}]
  - to: [{{operation: {{paths: [/admin]}}}}]
    when: [{{key: "request.auth.claims[group]", values: [admins]}}]
"""


@dataclass
class JwtMesh:
    mesh: LocalMesh
    sidecar: Sidecar
    app: Backend
    app_port: int
    issuer: Issuer
    inline_key: SigningKey

    def call(
        self, path: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(POD, self.app_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": "api:9080", **sent})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def status(self, resource: str) -> dict[str, Any]:
        """The control plane's status of ``resource`` (no issues while it has none yet)."""
        for entry in self.mesh.debug.get("/debug/status"):
            if entry["resource"] == resource:
                found: dict[str, Any] = entry
                return found
        return {"resource": resource, "issues": []}

    def wait_until(self, check: Any, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.mesh.control_plane.log_tail()}")


@pytest.fixture(scope="module")
def jm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JwtMesh]:
    workdir: Path = tmp_path_factory.mktemp("jwt")
    issuer = Issuer()
    issuer.keys = [SigningKey("k1")]
    inline_key = SigningKey("inline-1")
    mesh = LocalMesh(workdir, control_plane_args=["--jwks-refresh-interval", str(REFRESH)])
    mesh.start()
    try:
        app_port = free_port(APP)
        mesh.write("workload.yaml", workload_yaml(app_port))
        app = mesh.backend("api", APP, app_port)
        mesh.write("ra.yaml", request_authentication(issuer.uri, jwks_of(inline_key)))
        mesh.write("authz.yaml", AUTHORIZATION)
        sidecar = mesh.sidecar(NODE, labels={"app": "api"}, service_account="api", app_address=APP)
        jm = JwtMesh(mesh, sidecar, app, app_port, issuer, inline_key)
        token = issuer.keys[0].token()
        jm.wait_until(lambda: jm.call("/secure", token)[0] == 200, what="the first key set")
        yield jm
    finally:
        mesh.stop()
        issuer.stop()


# ---- authentication: 401 for a bad token, nothing for no token --------------------------------


def test_a_valid_token_reaches_the_app_with_its_claims_as_headers(jm: JwtMesh) -> None:
    status, body = jm.call("/secure", jm.issuer.keys[0].token())
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["x-jwt-sub"] == "alice"  # outputClaimToHeaders
    assert "x-jwt-payload" in seen  # outputPayloadToHeader
    assert "authorization" not in seen  # forwardOriginalToken is false for this issuer


def test_an_expired_token_is_refused_with_401(jm: JwtMesh) -> None:
    past = int(time.time()) - 3600
    token = jm.issuer.keys[0].token(iat=past - 600, exp=past)
    assert jm.call("/open", token) == (401, b"Jwt is expired")


def test_a_token_of_an_unknown_issuer_is_refused_with_401(jm: JwtMesh) -> None:
    token = jm.issuer.keys[0].token(issuer="https://elsewhere.test")
    assert jm.call("/open", token)[0] == 401


def test_a_token_for_another_audience_is_refused(jm: JwtMesh) -> None:
    # Envoy's jwt_authn answers 403 for this one failure (401 for the others), in Istio too.
    token = jm.issuer.keys[0].token(aud="billing")
    assert jm.call("/open", token) == (403, b"Audiences in Jwt are not allowed")


def test_a_token_signed_by_a_key_the_issuer_never_published_is_refused(jm: JwtMesh) -> None:
    forged = SigningKey("k1").token()  # same kid, another key
    assert jm.call("/open", forged)[0] == 401


def test_without_a_token_authentication_passes_and_authorization_decides(jm: JwtMesh) -> None:
    assert jm.call("/open")[0] == 200
    assert jm.call("/secure") == (403, b"RBAC: access denied")


# ---- authorization on the verified token -------------------------------------------------------


def test_request_principal_is_issuer_slash_subject(jm: JwtMesh) -> None:
    key = jm.issuer.keys[0]
    assert jm.call("/mine", key.token())[0] == 200
    assert jm.call("/mine", key.token(sub="bob")) == (403, b"RBAC: access denied")


def test_a_claim_condition_matches_the_token_claim(jm: JwtMesh) -> None:
    key = jm.issuer.keys[0]
    assert jm.call("/admin", key.token(group="admins"))[0] == 200
    assert jm.call("/admin", key.token(group="users"))[0] == 403
    assert jm.call("/admin", key.token(group=["users", "admins"]))[0] == 200  # a list claim
    assert jm.call("/admin")[0] == 403


def test_inline_jwks_with_token_in_a_header_a_query_parameter_or_a_cookie(jm: JwtMesh) -> None:
    token = jm.inline_key.token(issuer=INLINE_ISSUER)
    status, body = jm.call("/secure", headers={"x-token": token})
    assert status == 200
    assert json.loads(body)["headers"]["x-token"] == token  # forwardOriginalToken
    assert jm.call(f"/secure?token={token}")[0] == 200
    assert jm.call("/secure", headers={"Cookie": f"theme=dark; session={token}"})[0] == 200
    assert jm.call("/secure", headers={"x-token": "not-a-jwt"})[0] == 401


# ---- the issuer's keys: rotation, outage ------------------------------------------------------


def test_rotated_keys_reach_the_sidecar_and_retired_keys_stop_working(jm: JwtMesh) -> None:
    old, new = jm.issuer.keys[0], SigningKey("k2")
    rotated_at = time.monotonic()
    jm.issuer.keys = [new]  # the issuer rotates: k1 retired, k2 signs from now on
    jm.wait_until(lambda: jm.call("/secure", new.token())[0] == 200, what="the rotated key set")
    print(f"\nrotated key accepted {time.monotonic() - rotated_at:.2f}s after the rotation")
    assert time.monotonic() - rotated_at < 3 * REFRESH + 2  # one refresh, then one push
    assert jm.call("/secure", old.token())[0] == 401


def test_issuer_down_after_a_fetch_keeps_the_last_good_keys(jm: JwtMesh) -> None:
    """The figure for the closing note: requests with a valid token while the issuer is down
    for several refresh intervals, after the keys were fetched once."""
    key = jm.issuer.keys[0]
    token = key.token()
    assert jm.call("/secure", token)[0] == 200
    fetches = jm.issuer.requests
    jm.issuer.down = True
    try:
        passed = refused = 0
        deadline = time.time() + 4 * REFRESH
        while time.time() < deadline:
            if jm.call("/secure", token)[0] == 200:
                passed += 1
            else:
                refused += 1
            time.sleep(0.05)
        assert jm.issuer.requests > fetches  # the control plane kept trying
        print(f"\nissuer down {4 * REFRESH:.0f}s: {passed} passed, {refused} refused")
        assert (passed, refused) == (passed, 0)
        assert passed > 20
        jm.wait_until(
            lambda: any(
                "CP0441" in issue
                for issue in jm.status("RequestAuthentication default/api-jwt")["issues"]
            ),
            what="the status to say the issuer is failing",
        )
    finally:
        jm.issuer.down = False
    jm.wait_until(
        lambda: (
            not any(
                "CP0441" in i for i in jm.status("RequestAuthentication default/api-jwt")["issues"]
            )
        ),
        what="the status to clear once the issuer is back",
    )


def test_an_issuer_never_reached_fails_closed_for_its_tokens_only(jm: JwtMesh) -> None:
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    stranger = SigningKey("s1")
    jm.mesh.write(
        "ra-dead.yaml",
        f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: dead-issuer, namespace: default}}
spec:
  jwtRules: [{{issuer: "https://dead.test", jwksUri: "{dead}"}}]
""",
    )
    try:
        token = stranger.token(issuer="https://dead.test", aud="api")
        jm.wait_until(
            lambda: any(
                "CP0442" in i
                for i in jm.status("RequestAuthentication default/dead-issuer")["issues"]
            ),
            what="the status to say no key set was ever fetched",
        )
        jm.wait_until(lambda: jm.call("/open", token)[0] == 401, what="the dead issuer's rule")
        # The sidecar's configuration moved on: the other issuer's tokens still work.
        assert jm.call("/secure", jm.issuer.keys[0].token())[0] == 200
    finally:
        jm.mesh.remove("ra-dead.yaml")
