"""Secrets as gateway credentials: only credential keys are kept, decoded once, and no value
ever reaches a repr, a finding or a log line; non-credential Secrets never reach the store
in cluster mode; istiod's key preferences and ``-cacert`` naming."""

from __future__ import annotations

import base64
import logging

import pytest

from controlplane.api import InvalidResource, load
from controlplane.api.credentials import (
    CredentialError,
    Secret,
    certificate_of,
    parse_sds_name,
    root_of,
)
from controlplane.sources.kube import translate

PRIVATE = "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_doc(data: dict[str, str], *, kind_type: str = "kubernetes.io/tls", **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cred", "namespace": "istio-system"},
        "type": kind_type,
        "data": {k: b64(v) for k, v in data.items()},
        **extra,
    }


def test_only_credential_keys_are_kept_decoded_and_the_key_never_shows_in_a_repr() -> None:
    secret, _ = load(secret_doc({"tls.crt": "CERT", "tls.key": PRIVATE, "password": "hunter2"}))
    assert isinstance(secret, Secret)
    assert secret.data == {"tls.crt": b"CERT", "tls.key": PRIVATE.encode()}
    for text in (repr(secret), str(secret), repr(certificate_of(secret))):
        assert "TOP-SECRET" not in text and "hunter2" not in text
    assert "TOP-SECRET" not in secret.model_dump_json()


def test_string_data_wins_over_data_as_the_apiserver_merges_them() -> None:
    secret, _ = load(secret_doc({"tls.crt": "OLD"}, stringData={"tls.crt": "NEW", "tls.key": "K"}))
    assert isinstance(secret, Secret)
    assert certificate_of(secret).cert == b"NEW"


def test_bad_base64_is_refused_naming_the_key_but_not_the_value() -> None:
    doc = secret_doc({})
    doc["data"] = {"tls.key": "TOP-SECRET!!notbase64"}
    with pytest.raises(InvalidResource) as err:
        load(doc)
    assert "tls.key" in str(err.value) and "TOP-SECRET" not in str(err.value)


def test_generic_keys_are_preferred_and_the_ca_comes_from_cacert_or_ca_crt() -> None:
    secret, _ = load(
        secret_doc({"cert": "G", "key": "GK", "tls.crt": "T", "tls.key": "TK", "ca.crt": "CA"})
    )
    assert isinstance(secret, Secret)
    assert certificate_of(secret).cert == b"G"
    assert root_of(secret).cert == b"CA"
    only_ca, _ = load(secret_doc({"cacert": "ROOTS"}, kind_type="Opaque"))
    assert isinstance(only_ca, Secret)
    assert root_of(only_ca).cert == b"ROOTS"
    with pytest.raises(CredentialError, match="found: cacert"):
        certificate_of(only_ca)


def test_sds_names_resolve_to_the_proxys_namespace_unless_they_name_one() -> None:
    assert parse_sds_name("kubernetes://cred", "istio-system") == parse_sds_name(
        "kubernetes://istio-system/cred", "other"
    )
    assert parse_sds_name("kubernetes://cred-cacert", "ns").wants_ca  # type: ignore[union-attr]
    assert parse_sds_name("default", "ns") is None


def test_in_cluster_mode_a_secret_that_is_no_credential_is_never_stored() -> None:
    token = secret_doc({"token": "abc"}, kind_type="kubernetes.io/service-account-token")
    update = translate("ADDED", token)
    assert update is not None and update.delete and update.submission is None
    opaque = translate("ADDED", secret_doc({"password": "hunter2"}, kind_type="Opaque"))
    assert opaque is not None and opaque.delete
    tls = translate("ADDED", secret_doc({"tls.crt": "C", "tls.key": PRIVATE}))
    assert tls is not None and tls.submission is not None


def test_a_refused_secret_keeps_no_content_and_logs_no_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = secret_doc({})
    doc["data"] = {"tls.key": "TOP-SECRET!!notbase64"}
    caplog.set_level(logging.DEBUG)
    update = translate("ADDED", doc)
    assert update is not None and update.rejection is not None
    assert update.rejection.content is None
    assert "TOP-SECRET" not in caplog.text
    assert all("TOP-SECRET" not in str(i) for i in update.rejection.issues)


def test_debug_output_of_a_credential_secret_shows_no_private_key() -> None:
    from controlplane.compile.sds import credential_secret, redacted

    secret, _ = load(secret_doc({"tls.crt": "CERT", "tls.key": PRIVATE}))
    assert isinstance(secret, Secret)
    shown = redacted(credential_secret("kubernetes://cred", certificate_of(secret)))
    assert shown["tlsCertificate"]["privateKey"] == {"inlineBytes": "[redacted]"}
    assert "TOP-SECRET" not in str(shown) and base64.b64encode(
        PRIVATE.encode()
    ).decode() not in str(shown)
