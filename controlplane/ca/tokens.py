"""Bootstrap tokens: how a proxy in file mode proves its identity to the xDS server.

`controlplane bootstrap` writes a token with `issue_token`; the xDS server reads it from the
proxy's connection and learns the proxy's namespace and service account with `verify_token`.

Format: a compact JWT (`header.claims.signature`, base64url without padding) signed with
HS256. The key is derived from the CA's private key with HKDF (`derive_token_key`) rather than
being the CA key itself or a separately persisted secret, because:

* only the control plane issues and verifies these tokens, so a shared secret suffices and an
  asymmetric signature (ES256) would buy nothing but cost;
* HKDF with a purpose label gives a key that is useless for anything but tokens, so the CA key
  never signs anything but certificates;
* nothing new has to be persisted: every key store (a directory, a Kubernetes Secret, an
  operator's read-only `cacerts` mount) already holds the CA key, and replicas sharing a CA
  accept each other's tokens. Rotating the CA key invalidates outstanding tokens, which is the
  wanted outcome.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from controlplane.ca.errors import InvalidIdentity, InvalidToken
from controlplane.ca.identity import DEFAULT_TRUST_DOMAIN, Identity

ISSUER = "controlplane"
_ALGORITHM = "HS256"
_KEY_LABEL = b"controlplane bootstrap token HS256 v1"
_MIN_KEY_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_TOKEN_CHARS = 8192


def derive_token_key(ca_key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The HMAC key for tokens, derived from (and only usable because of) the CA's private key."""
    secret = ca_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_LABEL).derive(secret)


def issue_token(
    key: bytes,
    namespace: str,
    service_account: str,
    audience: str,
    ttl: timedelta,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    now: datetime | None = None,
) -> str:
    """A token saying its bearer is `namespace/service_account`, for `audience`, for `ttl`."""
    _check_key(key)
    if ttl <= timedelta(0):
        raise ValueError(f"token ttl must be positive, not {ttl}")
    if not audience:
        raise ValueError("token audience must not be empty")
    identity = Identity(trust_domain, namespace, service_account)
    issued_at = int((now or datetime.now(UTC)).timestamp())
    header = {"alg": _ALGORITHM, "typ": "JWT"}
    claims = {
        "iss": ISSUER,
        "sub": identity.spiffe_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + max(1, int(ttl.total_seconds())),
    }
    signing_input = f"{_encode_json(header)}.{_encode_json(claims)}"
    return f"{signing_input}.{_encode(_mac(key, signing_input))}"


def verify_token(
    key: bytes,
    token: str,
    audience: str,
    *,
    now: datetime | None = None,
) -> Identity:
    """The identity a token vouches for; InvalidToken if it is malformed, forged, expired or
    meant for another audience."""
    _check_key(key)
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken(f"token is longer than {_MAX_TOKEN_CHARS} characters")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidToken(
            f"token must have three dot-separated parts (header.claims.signature), not {len(parts)}"
        )
    header_part, claims_part, signature_part = parts
    header = _decode_json(header_part, "header")
    if header.get("alg") != _ALGORITHM:
        raise InvalidToken(
            f"token algorithm is {header.get('alg')!r}; only {_ALGORITHM} tokens issued by this "
            "control plane are accepted"
        )
    # The signature is checked before any claim is believed.
    expected = _mac(key, f"{header_part}.{claims_part}")
    if not hmac.compare_digest(expected, _decode(signature_part, "signature")):
        raise InvalidToken(
            "token signature does not verify: it was issued by another CA or altered after issue"
        )
    claims = _decode_json(claims_part, "claims")
    if claims.get("iss") != ISSUER:
        raise InvalidToken(f"token issuer is {claims.get('iss')!r}, not {ISSUER!r}")
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise InvalidToken("token has no integer 'exp' claim")
    current = (now or datetime.now(UTC)).timestamp()
    if current >= expires:
        expired_at = datetime.fromtimestamp(expires, UTC).isoformat()
        raise InvalidToken(f"token expired at {expired_at}")
    audiences = claims.get("aud")
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or audience not in audiences:
        raise InvalidToken(f"token is for audience {claims.get('aud')!r}, not {audience!r}")
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise InvalidToken("token has no 'sub' claim naming a SPIFFE id")
    try:
        return Identity.parse(subject)
    except InvalidIdentity as exc:
        raise InvalidToken(f"token subject is not a workload identity: {exc}") from exc


def _check_key(key: bytes) -> None:
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"token key must be at least {_MIN_KEY_BYTES} bytes, not {len(key)}")


def _mac(key: bytes, signing_input: str) -> bytes:
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _encode_json(value: dict[str, Any]) -> str:
    return _encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _decode(part: str, what: str) -> bytes:
    # urlsafe_b64decode skips characters outside the alphabet; a token must not carry any.
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidToken(f"token {what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken(f"token {what} is not unpadded base64url") from exc


def _decode_json(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_decode(part, what))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"token {what} is not a JSON object")
    return value
