"""Wiring the mesh's security into `controlplane serve`: the CA, SDS, proxy authentication,
certificate rotation, the CertificateService and (optionally) TLS on the xDS port."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from controlplane.ca import (
    CAError,
    CertificateAuthority,
    DirectoryKeyStore,
    Identity,
    KeyStore,
    issue_token,
)
from controlplane.ca.authority import CLOCK_SKEW
from controlplane.ca.service import CertificateServicer
from controlplane.cache import SecretCache
from controlplane.xds.identity import (
    DEFAULT_AUDIENCE,
    DEFAULT_TOKEN_TTL,
    TokenAuthenticator,
    TokenVerifier,
    bearer_token,
    control_plane_tokens,
)

log = logging.getLogger("controlplane")

# The control plane's own identity, for the certificate it serves xDS with.
CONTROL_PLANE_NAMESPACE = "istio-system"
CONTROL_PLANE_ACCOUNT = "controlplane"


@dataclass
class MeshSecurity:
    """The mesh CA and what the xDS server is built with when it is on: the SDS cache
    (``provider``, routed the Secret type), the authenticator, and the CertificateService
    to serve on the xDS port."""

    ca: CertificateAuthority
    provider: SecretCache
    verify: TokenVerifier
    audience: str
    authenticator: TokenAuthenticator
    certificates: CertificateServicer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS for the xDS port, with a certificate of the mesh CA (clients need no cert)."""
        identity = Identity(self.ca.trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)
        cert = self.ca.issue(identity, self.ca.max_workload_ttl)
        return grpc.ssl_server_credentials(
            [(cert.private_key_pem.encode(), cert.cert_chain_pem.encode())]
        )

    def start(self) -> None:
        """Start renewing certificates (on the running loop)."""
        self.tasks.append(asyncio.create_task(self.provider.rotate(), name="cert-rotation"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass


def load_ca(store: KeyStore | Path, trust_domain: str, workload_ttl: float) -> CertificateAuthority:
    """The CA kept in ``store`` (a directory or a KeyStore; created on first start), issuing
    ``workload_ttl`` leaves."""
    if isinstance(store, Path):
        store = DirectoryKeyStore(store)
    ttl = timedelta(seconds=workload_ttl)
    # Back-dating by a minute would put a short-lived certificate's half-life in the past.
    skew = min(CLOCK_SKEW, ttl / 10)
    return CertificateAuthority.load_or_create(
        store, trust_domain=trust_domain, workload_ttl=ttl, clock_skew=skew
    )


def enable_security(
    *,
    ca_dir: Path | KeyStore,
    trust_domain: str = "cluster.local",
    workload_ttl: float = 24 * 3600.0,
    require_token: bool = False,
    audience: str = DEFAULT_AUDIENCE,
    verify: TokenVerifier | None = None,
) -> MeshSecurity:
    """The CA, the SDS cache, the proxies' authenticator and the CertificateService, for
    building the xDS server with. ``ca_dir`` is where the CA lives (a directory, or a
    KeyStore such as ``SecretKeyStore``); ``verify`` defaults to this CA's own bootstrap
    tokens. Call ``start()`` on the result once the loop runs."""
    ca = load_ca(ca_dir, trust_domain, workload_ttl)
    verify = verify or control_plane_tokens(ca.token_key, audience)
    provider = SecretCache(ca)
    authenticator = TokenAuthenticator(
        verify, trust_domain=trust_domain, require_token=require_token
    )

    def authenticate(context: Any) -> Identity:
        metadata = {str(k): str(v) for k, v in (context.invocation_metadata() or ())}
        token = bearer_token(metadata)
        if token is None:
            raise CAError("no bearer token in the call's metadata")
        return verify(token)

    certificates = CertificateServicer(ca, authenticate)
    log.info(
        "mesh CA from %s: trust domain %s, workload certificates for %s%s",
        ca_dir,
        trust_domain,
        timedelta(seconds=workload_ttl),
        ", tokens required" if require_token else "",
    )
    return MeshSecurity(ca, provider, verify, audience, authenticator, certificates)


def enable_cluster_security(
    api_client: Any,
    *,
    namespace: str = "istio-system",
    trust_domain: str = "cluster.local",
    audience: str = "istio-ca",
    workload_ttl: float = 24 * 3600.0,
    require_token: bool = True,
) -> MeshSecurity:
    """Cluster mode: the CA in the Secrets of ``namespace`` (``cacerts`` or
    ``istio-ca-secret``), proxies proved by their projected service-account tokens for
    ``audience``, checked with a TokenReview."""
    from controlplane.ca.secret_keystore import SecretKeyStore
    from controlplane.xds.identity import TokenReviewVerifier, kubernetes_token_review

    verify = TokenReviewVerifier(
        kubernetes_token_review(api_client), audience=audience, trust_domain=trust_domain
    )
    return enable_security(
        ca_dir=SecretKeyStore(api_client, namespace),
        trust_domain=trust_domain,
        workload_ttl=workload_ttl,
        require_token=require_token,
        audience=audience,
        verify=verify,
    )


def obtain_token(
    ca_dir: Path,
    namespace: str,
    service_account: str,
    *,
    trust_domain: str = "cluster.local",
    audience: str = DEFAULT_AUDIENCE,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
) -> str:
    """A bootstrap token for ``namespace/service_account``, signed with the CA in ``ca_dir``.

    Whoever can read the CA directory can mint tokens; that is the operator running the
    control plane, who is also the one starting its proxies in file mode.
    """
    bundle = DirectoryKeyStore(ca_dir).load()
    if bundle is None:
        raise SystemExit(
            f"controlplane bootstrap: no CA in {ca_dir}; start `controlplane serve --ca-dir "
            f"{ca_dir}` first (it creates one)"
        )
    ca = CertificateAuthority(bundle, trust_domain=trust_domain)
    return issue_token(
        ca.token_key, namespace, service_account, audience, ttl, trust_domain=trust_domain
    )


def control_plane_spiffe_id(trust_domain: str) -> str:
    """The URI SAN of the certificate the xDS port serves under ``--xds-tls``."""
    return Identity(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT).spiffe_id
