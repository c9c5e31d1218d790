from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path

import pytest

from controlplane.ca import (
    CertificateAuthority,
    DirectoryKeyStore,
    Identity,
    InvalidToken,
    issue_token,
    verify_token,
)
from controlplane.ca.root import create_root_bundle
from tests.support.pki import NOW

KEY = b"k" * 32
AUDIENCE = "controlplane-xds"
HOUR = timedelta(hours=1)


def _token(trust_domain: str = "cluster.local") -> str:
    return issue_token(
        KEY, "bookinfo", "reviews", AUDIENCE, HOUR, trust_domain=trust_domain, now=NOW
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_token_tells_the_verifier_the_namespace_and_service_account() -> None:
    identity = verify_token(KEY, _token(), AUDIENCE, now=NOW)

    assert identity == Identity("cluster.local", "bookinfo", "reviews")


def test_token_carries_the_configured_trust_domain() -> None:
    token = _token(trust_domain="mesh.example")

    assert verify_token(KEY, token, AUDIENCE, now=NOW).trust_domain == "mesh.example"


def test_token_is_a_compact_hs256_jwt() -> None:
    header, claims, signature = _token().split(".")

    assert json.loads(_unb64(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(_unb64(claims)) == {
        "iss": "controlplane",
        "sub": "spiffe://cluster.local/ns/bookinfo/sa/reviews",
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + HOUR).timestamp()),
    }
    assert len(_unb64(signature)) == 32


def test_token_is_accepted_until_just_before_it_expires() -> None:
    token = _token()

    verify_token(KEY, token, AUDIENCE, now=NOW + HOUR - timedelta(seconds=1))
    with pytest.raises(InvalidToken, match="token expired at 2030-06-01T13:00:00"):
        verify_token(KEY, token, AUDIENCE, now=NOW + HOUR)


def test_token_for_another_audience_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="audience 'controlplane-xds', not 'other'"):
        verify_token(KEY, _token(), "other", now=NOW)


def test_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verify_token(b"x" * 32, _token(), AUDIENCE, now=NOW)


def test_token_whose_claims_were_edited_is_rejected() -> None:
    header, claims, signature = _token().split(".")
    edited = json.loads(_unb64(claims)) | {"sub": "spiffe://cluster.local/ns/bookinfo/sa/admin"}
    forged = ".".join([header, _b64(json.dumps(edited).encode()), signature])

    with pytest.raises(InvalidToken, match="signature does not verify"):
        verify_token(KEY, forged, AUDIENCE, now=NOW)


def test_token_whose_expiry_was_extended_is_rejected() -> None:
    header, claims, signature = _token().split(".")
    edited = json.loads(_unb64(claims)) | {"exp": int((NOW + 1000 * HOUR).timestamp())}
    forged = ".".join([header, _b64(json.dumps(edited).encode()), signature])

    with pytest.raises(InvalidToken, match="signature does not verify"):
        verify_token(KEY, forged, AUDIENCE, now=NOW + 2 * HOUR)


def test_unsigned_token_claiming_alg_none_is_rejected() -> None:
    _, claims, _ = _token().split(".")
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())

    with pytest.raises(InvalidToken, match="algorithm is 'none'"):
        verify_token(KEY, f"{header}.{claims}.", AUDIENCE, now=NOW)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "three dot-separated parts"),
        ("a.b", "three dot-separated parts"),
        ("a.b.c.d", "three dot-separated parts"),
        ("!!!.e30.e30", "header is not unpadded base64url"),
        ("e30=.e30.e30", "header is not unpadded base64url"),
        ("bm90IGpzb24.e30.e30", "header is not JSON"),
        ("W10.e30.e30", "header is not a JSON object"),
        ("x" * 9000, "longer than"),
    ],
)
def test_malformed_token_is_rejected_with_the_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_token(KEY, token, AUDIENCE, now=NOW)


def test_token_whose_subject_is_not_a_workload_is_rejected() -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": "controlplane", "sub": "admin", "aud": AUDIENCE, "exp": 2**40}
    unsigned = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = _b64(hmac.new(KEY, unsigned.encode(), hashlib.sha256).digest())

    with pytest.raises(InvalidToken, match="subject is not a workload identity"):
        verify_token(KEY, f"{unsigned}.{signature}", AUDIENCE, now=NOW)


def test_issuing_refuses_short_keys_and_non_positive_lifetimes() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_token(b"short", "ns", "sa", AUDIENCE, HOUR)
    with pytest.raises(ValueError, match="ttl must be positive"):
        issue_token(KEY, "ns", "sa", AUDIENCE, timedelta(0))


def test_ca_token_key_survives_a_restart_and_differs_between_cas(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)
    restarted = CertificateAuthority.load_or_create(DirectoryKeyStore(tmp_path), now=NOW)
    other = CertificateAuthority(create_root_bundle(NOW), now=NOW)
    token = issue_token(first.token_key, "bookinfo", "reviews", AUDIENCE, HOUR, now=NOW)

    assert verify_token(restarted.token_key, token, AUDIENCE, now=NOW).service_account == "reviews"
    with pytest.raises(InvalidToken):
        verify_token(other.token_key, token, AUDIENCE, now=NOW)
