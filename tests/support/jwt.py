"""Keys for JWT tests: real public keys as JWKs (Envoy refuses key material that is not)."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@cache
def _numbers(kid: str) -> rsa.RSAPublicNumbers:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_numbers()


def rsa_jwk(kid: str) -> dict[str, Any]:
    """A 2048-bit RSA public key as a JWK (the same key for the same ``kid``)."""
    numbers = _numbers(kid)
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "n": _b64(numbers.n), "e": _b64(numbers.e)}


def jwks(*kids: str) -> str:
    return json.dumps({"keys": [rsa_jwk(k) for k in kids]})
