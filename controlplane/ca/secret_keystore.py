"""Cluster mode: the CA's bundle kept in Kubernetes Secrets, as istiod keeps it.

* An operator's ``cacerts`` Secret (Istio's plug-in CA layout: ca-cert.pem, ca-key.pem,
  cert-chain.pem, root-cert.pem) is used when present, and never written to.
* Otherwise the self-signed root lives in ``istio-ca-secret``, created on first start. Two
  replicas starting together both try to create it; the API server lets one win (409 for the
  other), and the loser reads the winner's bundle, so a mesh never gets two roots.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from controlplane.ca.bundle import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    ROOT_CERT_FILE,
    CABundle,
)
from controlplane.ca.errors import InvalidCABundle

OPERATOR_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"
_FILES = (CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE)


class SecretKeyStore:
    """A KeyStore on Secrets in ``namespace`` (the control plane's, e.g. istio-system)."""

    def __init__(self, api_client: Any, namespace: str = "istio-system") -> None:
        # Plain GETs and a POST over the client's connection: the kubernetes client's
        # CoreV1Api costs about a second and 20 MB to import (issue 14).
        self._api_client = api_client
        self.namespace = namespace
        self.source: str | None = None  # which Secret the bundle came from

    def __repr__(self) -> str:
        return f"SecretKeyStore({self.namespace!r})"

    def load(self) -> CABundle | None:
        for name in (OPERATOR_SECRET, SELF_SIGNED_SECRET):
            data = self._read(name)
            if data is not None:
                self.source = name
                return _bundle(f"Secret {self.namespace}/{name}", data)
        return None

    def save(self, bundle: CABundle) -> None:
        """Create ``istio-ca-secret``; if another replica created it first, keep theirs
        (``CertificateAuthority.load_or_create`` reads the store back after saving)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": SELF_SIGNED_SECRET,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "controlplane"},
            },
            "type": "istio.io/ca-root",
            "data": {
                CA_CERT_FILE: _b64(bundle.ca_cert_pem),
                CA_KEY_FILE: _b64(bundle.ca_key_pem),
                CERT_CHAIN_FILE: _b64(bundle.cert_chain_pem),
                ROOT_CERT_FILE: _b64(bundle.root_cert_pem),
            },
        }
        api = self._api_client
        method, url, headers, payload, _ = api.param_serialize(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/secrets",
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(method, url, header_params=headers, body=payload)
        raw = response.read()
        if response.status not in (200, 201, 409):  # 409: another replica's stays
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=response.status, reason=response.reason, body=raw)
        self.source = SELF_SIGNED_SECRET

    def _read(self, name: str) -> dict[str, str] | None:
        """The Secret's data (base64 values), by a plain GET; None if there is none."""
        api = self._api_client
        path = f"/api/v1/namespaces/{self.namespace}/secrets/{name}"
        method, url, headers, body, _ = api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = api.call_api(method, url, header_params=headers, body=body)
        raw = response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=response.status, reason=response.reason, body=raw)
        data = json.loads(raw).get("data") or {}
        return {str(k): str(v) for k, v in data.items()}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def _bundle(where: str, data: dict[str, str]) -> CABundle:
    missing = [name for name in _FILES if name not in data]
    if missing:
        raise InvalidCABundle(
            f"{where} is an incomplete cacerts Secret: missing {', '.join(missing)}"
        )
    try:
        text = {name: base64.b64decode(data[name]).decode("ascii") for name in _FILES}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCABundle(f"{where}: a key is not base64 PEM: {exc}") from exc
    return CABundle(
        ca_cert_pem=text[CA_CERT_FILE],
        ca_key_pem=text[CA_KEY_FILE],
        cert_chain_pem=text[CERT_CHAIN_FILE],
        root_cert_pem=text[ROOT_CERT_FILE],
    )
