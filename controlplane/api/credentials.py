"""Kubernetes Secrets as TLS credentials: what a Gateway server's ``tls.credentialName`` names.

Only the keys istiod reads for a credential are kept (``tls.crt``/``tls.key``/``ca.crt``/
``ca.crl``, and the generic ``cert``/``key``/``cacert``/``crl``); every other key, and every
Secret that holds none of them, is dropped at the door, so the store never holds a Secret it
has no use for. Values are decoded once (``data`` is base64, ``stringData`` plain, as the
apiserver merges them) and never appear in a repr, a finding or a log line: an error names
the Secret and the key, never the value.

``certificate_of`` and ``root_of`` read a credential as istiod's credentials controller
does (pilot/pkg/credentials/kube/secrets.go): the generic keys first, then the
``kubernetes.io/tls`` ones; a CA is taken from the Secret itself or from ``<name>-cacert``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from controlplane.api.base import KubeModel, ObjectMeta

SECRET_KIND = "Secret"
# SDS resource names of credentials, as istiod names them (pilot/pkg/model/credentials).
SDS_KUBERNETES_PREFIX = "kubernetes://"
# A Secret named with its namespace by a Gateway API listener (istiod's
# ``ToKubernetesGatewayResource``): served to a gateway only when the reference is verified
# (same namespace, or a ReferenceGrant in the Secret's namespace allows it).
SDS_KUBERNETES_GATEWAY_PREFIX = "kubernetes-gateway://"
CA_SUFFIX = "-cacert"


def kubernetes_gateway_credential(namespace: str, name: str) -> str:
    """The credential name of Secret ``namespace/name`` referred to by a Gateway API
    listener (``kubernetes-gateway://<namespace>/<name>``)."""
    return f"{SDS_KUBERNETES_GATEWAY_PREFIX}{namespace}/{name}"


def parse_kubernetes_gateway_credential(credential: str) -> tuple[str, str] | None:
    """(namespace, name) of a ``kubernetes-gateway://<namespace>/<name>`` credential name;
    None for any other form (a malformed one included: it names no Secret)."""
    if not credential.startswith(SDS_KUBERNETES_GATEWAY_PREFIX):
        return None
    namespace, sep, name = credential.removeprefix(SDS_KUBERNETES_GATEWAY_PREFIX).partition("/")
    if not sep or not namespace or not name or "/" in name:
        return None
    return namespace, name


# The keys a credential may hold, in istiod's order of preference.
GENERIC_CERT, GENERIC_KEY, GENERIC_CA, GENERIC_CRL = "cert", "key", "cacert", "crl"
TLS_CERT, TLS_KEY, TLS_CA, TLS_CRL = "tls.crt", "tls.key", "ca.crt", "ca.crl"
CREDENTIAL_KEYS = frozenset(
    {GENERIC_CERT, GENERIC_KEY, GENERIC_CA, GENERIC_CRL, TLS_CERT, TLS_KEY, TLS_CA, TLS_CRL}
)
# Secret types istiod's informer never lists (pilot/pkg/credentials/kube SecretsFieldSelector).
IGNORED_TYPES = frozenset({"helm.sh/release.v1", "kubernetes.io/service-account-token"})


def _decode(data: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in data.items():
        if key not in CREDENTIAL_KEYS:
            continue
        if not isinstance(value, str):
            raise ValueError(f"data[{key!r}] must be a base64 string")
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"data[{key!r}] is not valid base64") from None
    return out


class Secret(KubeModel):
    """A Secret's credential keys (decoded); nothing else of it is kept."""

    api_version: str = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    type: str = "Opaque"
    # key -> decoded bytes; only CREDENTIAL_KEYS. Hidden from repr and never serialized back.
    data: dict[str, bytes] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _merge_string_data(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        body = dict(value)
        raw = body.get("data") or {}
        if not isinstance(raw, dict):
            raise ValueError("data must be a mapping of key to base64 value")
        merged = _decode(raw)
        string_data = body.pop("stringData", None) or {}
        if not isinstance(string_data, dict):
            raise ValueError("stringData must be a mapping of key to string")
        for key, text in string_data.items():
            if key in CREDENTIAL_KEYS:
                if not isinstance(text, str):
                    raise ValueError(f"stringData[{key!r}] must be a string")
                merged[key] = text.encode()  # the apiserver lets stringData win
        body["data"] = merged
        return body

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.data))
        return f"Secret({self.metadata.namespace}/{self.metadata.name}, keys: {keys})"

    __str__ = __repr__

    @property
    def is_credential(self) -> bool:
        """Whether istiod could read anything from it (else the store need not hold it)."""
        return self.type not in IGNORED_TYPES and bool(self.data)


@dataclass(frozen=True)
class CertInfo:
    """What a credential yields: a chain and key, or a CA bundle (``key`` empty), and a CRL."""

    cert: bytes
    key: bytes = b""
    crl: bytes = b""

    def __repr__(self) -> str:
        return f"CertInfo(cert={len(self.cert)} bytes, key=[redacted], crl={len(self.crl)} bytes)"


class CredentialError(ValueError):
    """A Secret that does not hold what is asked of it (the reason names keys, not values)."""


def _has_value(data: dict[str, bytes], *keys: str) -> bool:
    return all(data.get(k) for k in keys)


def _found(data: dict[str, bytes]) -> str:
    return ", ".join(sorted(data)) or "none of the credential keys"


def certificate_of(secret: Secret) -> CertInfo:
    """The server (or client) certificate chain and key of ``secret``."""
    data = secret.data
    if _has_value(data, GENERIC_CERT, GENERIC_KEY):
        return CertInfo(data[GENERIC_CERT], data[GENERIC_KEY], data.get(GENERIC_CRL, b""))
    if _has_value(data, TLS_CERT, TLS_KEY):
        return CertInfo(data[TLS_CERT], data[TLS_KEY], data.get(TLS_CRL, b""))
    for cert, key in ((GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)):
        if cert in data and key in data:
            raise CredentialError(f"found keys {cert!r} and {key!r}, but they are empty")
    raise CredentialError(
        f"has neither {TLS_CERT!r} and {TLS_KEY!r} nor {GENERIC_CERT!r} and {GENERIC_KEY!r}"
        f" (found: {_found(data)})"
    )


def root_of(secret: Secret) -> CertInfo:
    """The CA bundle of ``secret`` that client certificates are checked against."""
    data = secret.data
    if _has_value(data, GENERIC_CA):
        return CertInfo(data[GENERIC_CA], crl=data.get(GENERIC_CRL, b""))
    if _has_value(data, TLS_CA):
        return CertInfo(data[TLS_CA], crl=data.get(TLS_CRL, b""))
    for key in (GENERIC_CA, TLS_CA):
        if key in data:
            raise CredentialError(f"found key {key!r}, but it is empty")
    raise CredentialError(f"has neither {TLS_CA!r} nor {GENERIC_CA!r} (found: {_found(data)})")


def sds_name(credential_name: str) -> str:
    """The SDS name a gateway asks for a server certificate: ``kubernetes://<name>``."""
    return SDS_KUBERNETES_PREFIX + credential_name


def sds_ca_name(credential_name: str) -> str:
    """The SDS name of the CA checking client certificates: ``kubernetes://<name>-cacert``."""
    return SDS_KUBERNETES_PREFIX + credential_name + CA_SUFFIX


@dataclass(frozen=True)
class CredentialRef:
    """An SDS resource name parsed as istiod parses it: ``kubernetes://name`` (the proxy's
    namespace) or ``kubernetes://namespace/name``."""

    namespace: str
    name: str

    @property
    def wants_ca(self) -> bool:
        return self.name.endswith(CA_SUFFIX)


def parse_sds_name(resource_name: str, proxy_namespace: str) -> CredentialRef | None:
    """The Secret an SDS name refers to; None for names that are no Kubernetes credential
    (``default``, ``ROOTCA``, other schemes)."""
    if not resource_name.startswith(SDS_KUBERNETES_PREFIX):
        return None
    rest = resource_name[len(SDS_KUBERNETES_PREFIX) :]
    namespace, _, name = rest.rpartition("/")
    if not name or "/" in namespace:
        return None
    return CredentialRef(namespace or proxy_namespace, name)


class CredentialSettings(Protocol):
    """The credential fields of a Gateway server's ``tls`` (``api/gateway.ServerTLSSettings``)."""

    @property
    def credential_name(self) -> str | None: ...
    @property
    def credential_names(self) -> list[str]: ...
    @property
    def ca_cert_credential_name(self) -> str | None: ...


def credential_names(settings: CredentialSettings) -> list[str]:
    """The credential Secrets a server's TLS names (``credentialNames`` wins, as in istiod)."""
    if settings.credential_names:
        return list(settings.credential_names)
    return [settings.credential_name] if settings.credential_name else []


def ca_credential_name(settings: CredentialSettings) -> str | None:
    """The Secret name whose CA checks client certificates: ``caCertCredentialName``, else the
    ``-cacert`` of the (first) credential."""
    if settings.ca_cert_credential_name:
        return settings.ca_cert_credential_name
    names = credential_names(settings)
    return names[0] + CA_SUFFIX if names else None
