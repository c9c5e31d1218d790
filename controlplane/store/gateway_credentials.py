"""The in-context check of a Gateway's TLS credentials: does each server's ``credentialName``
name a Secret that exists, in the namespace of the gateway workload, and hold a certificate
(and, for MUTUAL, a CA)?

As istioctl's ``gateway.SecretAnalyzer`` (pkg/config/analysis/analyzers/gateway/secret.go):
the Secret is looked for in the namespace of the pods the Gateway's ``selector`` picks (the
gateway proxies receive only Secrets of their own namespace), or the Gateway's own namespace
when no pod is known; a missing Secret is istioctl's IST0101 ReferencedResourceNotFound
(here CP0520), one without a usable certificate IST0161 InvalidGatewayCredential (CP0521).
Neither holds the Gateway back: its other servers apply, and that server's TLS starts as
soon as the Secret appears (Envoy waits for the SDS secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from controlplane.api.credentials import (
    CA_SUFFIX,
    SECRET_KIND,
    CredentialError,
    Secret,
    ca_credential_name,
    certificate_of,
    credential_names,
    parse_kubernetes_gateway_credential,
    root_of,
)
from controlplane.api.gateway import Gateway
from controlplane.api.issues import Codes, Issue, ResourceKey
from controlplane.api.kube import Pod
from controlplane.store.gatewayapi_inputs import World
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects

_WITH_CREDENTIALS = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"})


def check_gateway_credentials(snapshot: SnapshotReader, gateway: Gateway) -> list[Issue]:
    """CP0520/CP0521 for each server whose credential Secret is missing or unusable."""
    servers = [
        (i, s)
        for i, s in enumerate(gateway.spec.servers)
        if s.tls is not None and s.tls.mode in _WITH_CREDENTIALS and credential_names(s.tls)
    ]
    if not servers:
        return []
    namespaces = workload_namespaces(snapshot, gateway)
    found: list[Issue] = []
    for i, server in servers:
        assert server.tls is not None
        settings = server.tls
        field = "credentialNames" if settings.credential_names else "credentialName"
        for j, name in enumerate(credential_names(settings)):
            path = f"spec.servers[{i}].tls.{field}" + (
                f"[{j}]" if settings.credential_names else ""
            )
            named = parse_kubernetes_gateway_credential(name)
            if named is not None:
                # kubernetes-gateway://<ns>/<name> names its Secret's namespace itself.
                found += _check_certificate(snapshot, path, *named)
                continue
            for namespace in namespaces:
                found += _check_certificate(snapshot, path, namespace, name)
        if settings.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            ca = ca_credential_name(settings)
            path = (
                f"spec.servers[{i}].tls.caCertCredentialName"
                if settings.ca_cert_credential_name
                else f"spec.servers[{i}].tls.{field}"
            )
            for namespace in namespaces:
                found += _check_ca(snapshot, path, namespace, ca or "")
    return found


def workload_namespaces(snapshot: SnapshotReader, gateway: Gateway) -> list[str]:
    """Where the gateway proxies the Gateway selects run (their Secrets must be there)."""
    selector = gateway.spec.selector
    found = sorted(
        {
            pod.metadata.namespace
            for pod in snapshot.of_kind(Pod).values()
            if selector and selects(selector, pod.metadata.labels)
        }
    )
    return found or [gateway.metadata.namespace]


def _secret(snapshot: SnapshotReader, namespace: str, name: str) -> Secret | None:
    found = snapshot.get(ResourceKey(Secret.__name__, namespace, name))
    return found if isinstance(found, Secret) else None


def _check_certificate(
    snapshot: SnapshotReader, path: str, namespace: str, name: str
) -> list[Issue]:
    secret = _secret(snapshot, namespace, name)
    if secret is None:
        return [
            Issue(
                Codes.GATEWAY_CREDENTIAL_NOT_FOUND,
                path,
                f"Secret {namespace}/{name} not found (istioctl IST0101 "
                "ReferencedResourceNotFound): the gateway cannot serve this server's TLS "
                "until it exists",
            )
        ]
    try:
        info = certificate_of(secret)
    except CredentialError as exc:
        return [_invalid(path, namespace, name, str(exc))]
    problem = _validity(info.cert)
    return [_invalid(path, namespace, name, problem)] if problem else []


def _check_ca(snapshot: SnapshotReader, path: str, namespace: str, ca_name: str) -> list[Issue]:
    secret = _secret(snapshot, namespace, ca_name)
    base = ca_name.removesuffix(CA_SUFFIX)
    if secret is None and base != ca_name:
        secret = _secret(snapshot, namespace, base)  # istiod falls back to the Secret itself
    if secret is None:
        return []  # the certificate's own finding already says the Secret is missing
    try:
        root_of(secret)
    except CredentialError as exc:
        return [
            _invalid(
                path,
                namespace,
                secret.metadata.name,
                f"no CA for client certificates: neither Secret {namespace}/{ca_name} "
                f"exists nor does {secret.metadata.name} hold one ({exc})",
            )
        ]
    return []


def _invalid(path: str, namespace: str, name: str, reason: str) -> Issue:
    return Issue(
        Codes.GATEWAY_CREDENTIAL_INVALID,
        path,
        f"Secret {namespace}/{name} is no usable credential (istioctl IST0161 "
        f"InvalidGatewayCredential): {reason}",
    )


def _validity(cert_pem: bytes) -> str | None:
    """Why a certificate chain cannot be served (unreadable, expired, not yet valid)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return "the certificate is not PEM-encoded X.509"
    now = datetime.now(UTC)
    for cert in chain:
        if now > cert.not_valid_after_utc or now < cert.not_valid_before_utc:
            return "the certificate is expired or not yet valid"
    return None


# ---- which kubernetes-gateway:// credentials a namespace's gateways may be served ----------


def verified_gateway_credentials(
    resources: Mapping[str, Mapping[ResourceKey, Any]],
) -> dict[str, frozenset[tuple[str, str]]]:
    """Gateway namespace -> the Secrets (namespace, name) its gateways may be served as
    ``kubernetes-gateway://<namespace>/<name>``, as istiod's ``VerifiedCertificateReferences``
    (pilot/pkg/model/gateway.go, checked by pilot/pkg/xds/sds.go): a Gateway server of that
    namespace names the credential, and the Secret is in the same namespace or a
    ReferenceGrant in the Secret's namespace lets Gateways of the gateway's namespace refer
    to it. A credential nobody names, or whose grant went, is served to nobody."""
    world = World(resources)
    out: dict[str, set[tuple[str, str]]] = {}
    for key, gateway in resources.get(Gateway.__name__, {}).items():
        for server in gateway.spec.servers:
            if server.tls is None:
                continue
            for credential in credential_names(server.tls):
                named = parse_kubernetes_gateway_credential(credential)
                if named is None:
                    continue
                namespace, name = named
                if namespace == key.namespace or world.granted(
                    "Gateway", key.namespace, "", SECRET_KIND, name, namespace
                ):
                    out.setdefault(key.namespace, set()).add(named)
    return {ns: frozenset(found) for ns, found in out.items()}
