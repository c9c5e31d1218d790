"""security.istio.io RequestAuthentication (v1, v1beta1): which JWTs a workload accepts.

Every field Istio defines is declared. Validation is istiod's (``pkg/config/validation``,
``ValidateRequestAuthentication`` and the CRD's own rules): an issuer or a jwksUri, non-empty
audiences and token locations, a jwksUri that is an http(s) URL, an inline ``jwks`` that
parses as a JSON Web Key Set, at most one of ``jwks`` and ``jwksUri``, header names for
``outputClaimToHeaders``, a selector or targetRefs but not both. Private key material in an
inline ``jwks`` is a warning, as in istiod.

``JwksKeySet`` is a pseudo-kind (never read from a file or the cluster): the control plane
fetches each ``jwksUri`` itself (``sources/jwks.py``) and puts the last good key set it got
into the store under ``jwks_key(uri)``, so that a key change recompiles only the proxies
whose RequestAuthentications name that URI.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import Field

from controlplane.api.base import Duration, IstioModel, KubeModel, ObjectMeta
from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.networking import WorkloadSelector
from controlplane.api.resources import register
from controlplane.api.security import PolicyTargetReference
from controlplane.api.validation import register_validator

JWKS_KEY_SET_KIND = "JwksKeySet"


class JWTHeader(IstioModel):
    name: str = ""
    prefix: str = ""


class ClaimToHeader(IstioModel):
    header: str = ""
    claim: str = ""


class JWTRule(IstioModel):
    issuer: str = ""
    audiences: list[str] = Field(default_factory=list)
    jwks_uri_camel: str = Field(default="", alias="jwksUri")
    # The deprecated snake_case spelling the CRD still accepts.
    jwks_uri_snake: str = Field(default="", alias="jwks_uri")
    jwks: str = ""
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    output_payload_to_header: str = ""
    forward_original_token: bool = False
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    space_delimited_claims: list[str] = Field(default_factory=list)
    timeout: Duration | None = None
    presence: Literal["OPTIONAL", "REQUIRED"] | None = None

    @property
    def uri(self) -> str:
        """The jwksUri, whichever spelling was used."""
        return self.jwks_uri_camel or self.jwks_uri_snake


class RequestAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    jwt_rules: list[JWTRule] = Field(default_factory=list)


class RequestAuthentication(IstioModel):
    api_version: str = "security.istio.io/v1"
    kind: Literal["RequestAuthentication"] = "RequestAuthentication"
    metadata: ObjectMeta
    spec: RequestAuthenticationSpec


# ---- the key sets the control plane fetched ---------------------------------------------------


class JwksKeySetSpec(KubeModel):
    """What the control plane knows of one jwksUri.

    ``jwks``: the last key set fetched and found well formed (None: never fetched, so tokens
    of the issuers that use this URI are refused, as istiod does). ``fetched_at``: when it was
    fetched (Unix time). ``error``: why the latest attempt failed, empty when it succeeded;
    ``failing_since``: when the failures began.
    """

    uri: str
    jwks: str | None = None
    fetched_at: float | None = None
    error: str = ""
    failing_since: float | None = None


class JwksKeySet(KubeModel):
    api_version: str = "controlplane/v1"
    kind: Literal["JwksKeySet"] = "JwksKeySet"
    metadata: ObjectMeta
    spec: JwksKeySetSpec


DEFAULT_FETCH_TIMEOUT = 5.0  # istiod's default for ``timeout``
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


def discovery_uri(issuer: str) -> str:
    """Where an issuer-only rule's keys are found: OpenID discovery, as istiod does."""
    return issuer.rstrip("/") + DISCOVERY_SUFFIX


def key_source(rule: JWTRule) -> str | None:
    """The URI the control plane fetches for ``rule`` (its jwksUri, or the issuer's OpenID
    discovery document), or None when the keys are inline."""
    if rule.jwks:
        return None
    return rule.uri or (discovery_uri(rule.issuer) if rule.issuer else None)


def fetch_timeout(rule: JWTRule) -> float:
    """How long the control plane waits for this rule's key set (``timeout``, 5 s)."""
    return rule.timeout if rule.timeout is not None else DEFAULT_FETCH_TIMEOUT


def jwks_key(uri: str) -> ResourceKey:
    """The store key of the key set fetched from ``uri``."""
    return ResourceKey(JWKS_KEY_SET_KIND, "", uri)


def jwks_key_set(spec: JwksKeySetSpec) -> JwksKeySet:
    return JwksKeySet(metadata=ObjectMeta(name=spec.uri), spec=spec)


# ---- JSON Web Key Sets ------------------------------------------------------------------------

_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")


def _b64url(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def _int(value: Any) -> int | None:
    raw = _b64url(value)
    return int.from_bytes(raw, "big") if raw else None


def key_problem(key: Any) -> str | None:
    """Why Envoy's jwt_authn would not use this JWK (None: it would). Envoy refuses a key
    set in which no key is usable, and with it the whole listener: these checks are Envoy's
    (key types RSA, EC P-256/384/521, OKP Ed25519, oct; ``alg`` consistent with the key),
    with the key material itself loaded to be sure it is one."""
    if not isinstance(key, dict):
        return "is not an object"
    kty, alg = key.get("kty"), key.get("alg")
    if alg is not None and not isinstance(alg, str):
        return "alg must be a string"
    try:
        if kty == "RSA":
            n, e = _int(key.get("n")), _int(key.get("e"))
            if n is None or e is None:
                return "an RSA key needs 'n' and 'e' in base64url"
            if n.bit_length() < 512 or n % 2 == 0 or e < 3 or e % 2 == 0:
                return "'n' and 'e' do not make an RSA public key"
            rsa.RSAPublicNumbers(e, n).public_key()
            if alg is not None and not alg.startswith(("RS", "PS")):
                return f"alg {alg!r} is not an RSA algorithm (RS* or PS*)"
        elif kty == "EC":
            crv = key.get("crv")
            if crv not in _CURVES:
                return f"curve {crv!r} is not supported (P-256, P-384, P-521)"
            x, y = _int(key.get("x")), _int(key.get("y"))
            if x is None or y is None:
                return "an EC key needs 'x' and 'y' in base64url"
            ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]).public_key()
            if alg is not None and alg != _EC_ALG[crv]:
                return f"alg {alg!r} does not match curve {crv} ({_EC_ALG[crv]})"
        elif kty == "OKP":
            if key.get("crv") != "Ed25519":
                return f"curve {key.get('crv')!r} is not supported (Ed25519)"
            x_bytes = _b64url(key.get("x"))
            if x_bytes is None or len(x_bytes) != 32:
                return "an Ed25519 key needs 'x' of 32 bytes in base64url"
            ed25519.Ed25519PublicKey.from_public_bytes(x_bytes)
            if alg is not None and alg != "EdDSA":
                return f"alg {alg!r} is not EdDSA"
        elif kty == "oct":
            if _b64url(key.get("k")) is None:
                return "a symmetric key needs 'k' in base64url"
            if alg is not None and alg not in ("HS256", "HS384", "HS512"):
                return f"alg {alg!r} is not an HMAC algorithm (HS256, HS384, HS512)"
        else:
            return f"key type {kty!r} is not supported (RSA, EC, OKP, oct)"
    except (ValueError, TypeError) as exc:
        return f"not a valid {kty} public key ({exc})"
    return None


def jwks_problems(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The usable keys of a JSON Web Key Set and what is wrong with the rest (a document
    that is not a key set at all: no keys, one problem)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return [], [f"not JSON ({exc})"]
    if not isinstance(doc, dict) or "keys" not in doc:
        return [], ["a JWKS is a JSON object with a 'keys' array"]
    keys = doc["keys"]
    if not isinstance(keys, list):
        return [], ["'keys' must be an array"]
    usable: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, key in enumerate(keys):
        problem = key_problem(key)
        if problem is None:
            usable.append(key)
        else:
            problems.append(f"keys[{i}]: {problem}")
    if not keys:
        problems.append("'keys' is empty (Envoy refuses a key set without a usable key)")
    return usable, problems


def parse_jwks(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """The usable keys of a key set, or why there is none (Envoy would refuse it)."""
    usable, problems = jwks_problems(text)
    if not usable:
        return [], "; ".join(problems) or "no usable key"
    return usable, None


def private_key_indexes(text: str) -> list[int]:
    """Keys that carry private material (or are symmetric): verification needs none."""
    try:
        keys = json.loads(text).get("keys")
    except (ValueError, AttributeError):
        return []
    if not isinstance(keys, list):
        return []
    return [
        i
        for i, key in enumerate(keys)
        if isinstance(key, dict)
        and (key.get("kty") == "oct" or any(m in key for m in _PRIVATE_MEMBERS))
    ]


# ---- validation -------------------------------------------------------------------------------


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _header_name_ok(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name) and name.isascii()


def check_jwks_uri(path: str, uri: str) -> list[Issue]:
    """istiod's ParseJwksURI and the CRD rule: an http or https URL with a host."""
    if len(uri) > 2048:
        return [_error(path, "must be at most 2048 characters")]
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return [_error(path, f"{uri!r} is not a URL ({exc})")]
    if parts.scheme not in ("http", "https"):
        return [_error(path, f"{uri!r}: url must have scheme http:// or https://")]
    if not parts.hostname:
        return [_error(path, f"{uri!r} has no host")]
    if port == 0:
        return [_error(path, f"{uri!r}: port 0 is not a port")]
    return []


def validate_request_authentication(ra: RequestAuthentication) -> list[Issue]:
    spec = ra.spec
    found: list[Issue] = []
    if spec.selector is not None:
        for key, value in spec.selector.match_labels.items():
            lpath = f"spec.selector.matchLabels.{key}"
            if not key:
                found.append(_error(lpath, "key must not be empty"))
            elif "*" in key or "*" in value:
                found.append(_error(lpath, "wildcards are not allowed in a workload selector"))
    set_kinds = (spec.selector is not None) + (spec.target_ref is not None) + bool(spec.target_refs)
    if set_kinds > 1:
        found.append(_error("spec", "only one of targetRefs or selector can be set"))
    refs = [("spec.targetRef", spec.target_ref)] if spec.target_ref is not None else []
    refs += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(spec.target_refs)]
    for path, ref in refs:
        if ref is None:
            continue
        if not ref.kind or not ref.name:
            found.append(_error(path, "kind and name are required"))
        if ref.namespace:
            found.append(
                _error(
                    f"{path}.namespace", "cross namespace referencing is not currently supported"
                )
            )
    for i, rule in enumerate(spec.jwt_rules):
        found += _validate_rule(f"spec.jwtRules[{i}]", rule)
    return found


def _validate_rule(path: str, rule: JWTRule) -> list[Issue]:
    found: list[Issue] = []
    for j, audience in enumerate(rule.audiences):
        if not audience:
            found.append(_error(f"{path}.audiences[{j}]", "audience must be non-empty string"))
    if not rule.issuer and not rule.uri:
        found.append(_error(f"{path}.issuer", "issuer or jwksUri must be non-empty string"))
    if rule.jwks_uri_camel and rule.jwks_uri_snake:
        found.append(_error(f"{path}.jwksUri", "only one of jwks or jwksUri can be set"))
    if rule.uri and rule.jwks:
        found.append(_error(f"{path}.jwks", "only one of jwks or jwksUri can be set"))
    if rule.uri:
        field = "jwksUri" if rule.jwks_uri_camel else "jwks_uri"
        found += check_jwks_uri(f"{path}.{field}", rule.uri)
    if rule.jwks:
        _, problems = jwks_problems(rule.jwks)
        for problem in problems:
            found.append(_error(f"{path}.jwks", f"jwks parse error: {problem}"))
        for k in private_key_indexes(rule.jwks):
            found.append(
                Issue(
                    Codes.INVALID_FIELD,
                    f"{path}.jwks",
                    f"jwks key at index {k} contains private key material; only public keys "
                    "are used for verification",
                    level=Level.WARNING,
                )
            )
    for j, header in enumerate(rule.from_headers):
        if not header.name:
            found.append(
                _error(f"{path}.fromHeaders[{j}].name", "location header name must be non-empty")
            )
    for j, param in enumerate(rule.from_params):
        if not param:
            found.append(_error(f"{path}.fromParams[{j}]", "location query must be non-empty"))
    for j, cookie in enumerate(rule.from_cookies):
        if not cookie:
            found.append(_error(f"{path}.fromCookies[{j}]", "cookie name must be non-empty"))
    for j, out in enumerate(rule.output_claim_to_headers):
        opath = f"{path}.outputClaimToHeaders[{j}]"
        if not out.claim or not out.header:
            found.append(_error(opath, "header and claim value must be non-empty string"))
        elif not _header_name_ok(out.header):
            found.append(_error(f"{opath}.header", f"{out.header!r} is not a valid header name"))
    if rule.output_payload_to_header and not _header_name_ok(rule.output_payload_to_header):
        found.append(
            _error(
                f"{path}.outputPayloadToHeader",
                f"{rule.output_payload_to_header!r} is not a valid header name",
            )
        )
    if rule.timeout is not None and rule.timeout < 0.001:
        found.append(_error(f"{path}.timeout", "must be a valid duration greater than 1ms"))
    for j, claim in enumerate(rule.space_delimited_claims):
        if not claim:
            found.append(_error(f"{path}.spaceDelimitedClaims[{j}]", "must be non-empty"))
    if len(rule.space_delimited_claims) > 64:
        found.append(_error(f"{path}.spaceDelimitedClaims", "at most 64 claims"))
    return found


register(
    "security.istio.io",
    "RequestAuthentication",
    RequestAuthentication,
    frozenset({"v1", "v1beta1"}),
)
register_validator("RequestAuthentication", validate_request_authentication)
