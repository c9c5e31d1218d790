"""Who is on the other end of an xDS stream: identity proved, not claimed.

A proxy says who it is in its node metadata (``NAMESPACE``, ``SERVICE_ACCOUNT``) and proves it
with a bearer token in the stream's gRPC metadata (``authorization: Bearer <token>``, which
Envoy sends from the bootstrap's ``initial_metadata``). In file mode the token is one that
``controlplane bootstrap`` obtained from this control plane's CA (``verify_token``); in cluster
mode it is the pod's projected service-account token, checked with a TokenReview.

A proxy whose claim and proof disagree is refused (as istiod refuses it): it gets no
configuration and no certificate, and the log says which identity it claimed and which it
proved. A proxy without a token is refused under ``--require-token`` and otherwise served
configuration without a certificate (plaintext only).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from controlplane.api.text import LOG_LIMIT, printable
from controlplane.ca import CAError, Identity, InvalidToken, verify_token
from controlplane.cache.interface import Proxy

log = logging.getLogger("controlplane.identity")

TOKEN_METADATA = "authorization"
DEFAULT_AUDIENCE = "controlplane-xds"
DEFAULT_TOKEN_TTL = timedelta(hours=1)  # as Kubernetes rotates projected tokens

# Token -> the identity it proves (raises InvalidToken or another CAError).
TokenVerifier = Callable[[str], Identity]


@dataclass(frozen=True)
class StreamInfo:
    """What the transport knows about a stream: for authenticating the proxy behind it."""

    peer: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # gRPC invocation metadata
    auth_context: Mapping[str, Any] = field(default_factory=dict)  # TLS peer identity, if any


class IdentityRejected(Exception):
    """The stream could not prove the identity its node claims."""


# Turns a claimed proxy into an authenticated one (or raises IdentityRejected). The xDS
# server is given one at construction; the caches only ever see authenticated proxies.
Authenticator = Callable[[Proxy, StreamInfo], Proxy]


def trust_the_claim(proxy: Proxy, info: StreamInfo) -> Proxy:
    """The authenticator without a CA: the node's claim is taken as is (no certificates)."""
    return proxy


def bearer_token(metadata: dict[str, str] | Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, if any."""
    value = metadata.get(TOKEN_METADATA) if hasattr(metadata, "get") else None
    if not value:
        return None
    scheme, _, token = str(value).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def control_plane_tokens(token_key: bytes, audience: str = DEFAULT_AUDIENCE) -> TokenVerifier:
    """File mode: tokens signed by this control plane's CA (``controlplane bootstrap``)."""

    def verify(token: str) -> Identity:
        return verify_token(token_key, token, audience)

    return verify


class TokenAuthenticator:
    """The xDS server's authenticator: checks the stream's token against the node's claim."""

    def __init__(
        self,
        verify: TokenVerifier,
        *,
        trust_domain: str,
        require_token: bool = False,
    ) -> None:
        self.verify = verify
        self.trust_domain = trust_domain
        self.require_token = require_token
        self._warned: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, proxy: Proxy, info: StreamInfo) -> Proxy:
        claimed = f"{proxy.namespace}/{proxy.service_account}"
        token = bearer_token(info.metadata)
        if token is None:
            if self.require_token:
                self._log(proxy, "no-token", "presented no token (--require-token is set)")
                raise IdentityRejected(
                    f"node {proxy.node_id} presented no token; refused (tokens are required)"
                )
            self._log(
                proxy,
                "no-token",
                f"presented no token: serving it as {claimed} without a certificate",
                level=logging.INFO,
            )
            return replace(proxy, trust_domain=self.trust_domain, identity="")
        try:
            identity = self.verify(token)
        except CAError as exc:
            self._log(proxy, "bad-token", f"claims {claimed} but its token is invalid: {exc}")
            raise IdentityRejected(f"node {proxy.node_id}: token rejected: {exc}") from None
        proved = f"{identity.namespace}/{identity.service_account}"
        if proved != claimed or identity.trust_domain != self.trust_domain:
            self._log(
                proxy,
                "mismatch",
                f"claims service account {claimed} but its token proves {identity.spiffe_id}; "
                "refused, no certificate issued",
            )
            raise IdentityRejected(
                f"node {proxy.node_id} claims {claimed} but proved {identity.spiffe_id}"
            )
        return replace(proxy, trust_domain=identity.trust_domain, identity=identity.spiffe_id)

    def _log(self, proxy: Proxy, what: str, message: str, level: int = logging.WARNING) -> None:
        """Once per node and problem per minute: Envoy retries a refused stream every second."""
        key = (proxy.node_id, what)
        now = time.monotonic()
        with self._lock:
            last = self._warned.get(key)
            if last is not None and now - last < 60:
                return
            if len(self._warned) >= 10_000:  # node ids are the client's: keep this bounded
                self._warned = {k: t for k, t in self._warned.items() if now - t < 60}
            self._warned[key] = now
        log.log(level, "proxy %s %s", printable(proxy.node_id), printable(message, 2 * LOG_LIMIT))


class TokenReviewVerifier:
    """Cluster mode: a projected service-account token, checked by the kube-apiserver.

    ``review`` posts a TokenReview and returns its ``status`` as a dict (see
    ``kubernetes_token_review``); results are cached for a minute so that a reconnecting fleet
    does not turn into a storm of reviews.
    """

    def __init__(
        self,
        review: Callable[[str, list[str]], dict[str, Any]],
        *,
        audience: str,
        trust_domain: str,
        cache_seconds: float = 60.0,
    ) -> None:
        self.review = review
        self.audience = audience
        self.trust_domain = trust_domain
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def __call__(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and now - hit[0] < self.cache_seconds:
                return hit[1]
        try:
            status = self.review(token, [self.audience])
        except Exception as exc:  # the API server's errors are many; all mean "not proved"
            raise InvalidToken(f"TokenReview failed: {exc}") from exc
        if not status.get("authenticated"):
            raise InvalidToken(
                f"TokenReview did not authenticate the token: {status.get('error') or 'no reason'}"
            )
        audiences = status.get("audiences") or []
        if self.audience not in audiences:
            raise InvalidToken(f"token is for audiences {audiences}, not {self.audience!r}")
        username = str((status.get("user") or {}).get("username") or "")
        parts = username.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            raise InvalidToken(f"token belongs to {username!r}, not to a service account")
        identity = Identity(self.trust_domain, parts[2], parts[3])
        with self._lock:
            self._cache[digest] = (now, identity)
        return identity


def kubernetes_token_review(api_client: Any) -> Callable[[str, list[str]], dict[str, Any]]:
    """A ``review`` function for TokenReviewVerifier using the ``kubernetes`` client."""
    from kubernetes import client

    api = client.AuthenticationV1Api(api_client)

    def review(token: str, audiences: list[str]) -> dict[str, Any]:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
        result = api.create_token_review(body)
        status = result.status
        if status is None:
            return {"authenticated": False, "error": "the TokenReview has no status"}
        return {
            "authenticated": bool(status.authenticated),
            "audiences": list(status.audiences or []),
            "error": status.error,
            "user": {"username": status.user.username if status.user else ""},
        }

    return review
