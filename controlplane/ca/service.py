"""The `controlplane.ca.v1.CertificateService` gRPC service, for clients that keep their key.

`CertificateServicer` is a plain class: the xDS server mounts it on its own grpc.aio server
with `add_to_server` and decides how callers authenticate by passing `authenticate`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.ca.authority import CertificateAuthority
from controlplane.ca.errors import CAError, IdentityMismatch, InvalidCSR
from controlplane.ca.identity import Identity
from controlplane.protos_gen.ca.v1 import ca_pb2, ca_pb2_grpc

Authenticate: TypeAlias = Callable[
    [grpc.aio.ServicerContext[Any, Any]], Identity | Awaitable[Identity]
]
"""Returns the caller's identity, or raises a CAError (e.g. InvalidToken) saying why not."""

_log = logging.getLogger(__name__)
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)


class CertificateServicer:
    """Signs CSRs for the identity each caller authenticated as."""

    def __init__(
        self,
        ca: CertificateAuthority,
        authenticate: Authenticate,
        observe: Callable[[str], None] | None = None,
    ) -> None:
        self._ca = ca
        self._authenticate = authenticate
        # Told "csr", "issued", "error" or "auth_failure" (istiod's citadel_server_* counts).
        self.observe = observe or (lambda event: None)

    def replace_authority(self, ca: CertificateAuthority) -> None:
        """Sign with ``ca`` from now on (a root rotation's next step)."""
        self._ca = ca

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve `CertificateService` on `server`."""
        ca_pb2_grpc.add_CertificateServiceServicer_to_server(self, server)

    async def CreateCertificate(  # noqa: N802 - the RPC's name, as gRPC looks it up
        self,
        request: ca_pb2.CertificateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ca_pb2.CertificateResponse:
        """Certify the CSR's key for the caller's identity."""
        self.observe("csr")
        try:
            identity = await _resolve(self._authenticate(context))
        except CAError as exc:
            self.observe("auth_failure")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"not authenticated: {exc}")
        if request.validity_seconds < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"validity_seconds must not be negative, not {request.validity_seconds}",
            )
        ttl = self._requested_ttl(request.validity_seconds)
        try:
            signed = self._ca.sign_csr(request.csr_pem, identity, ttl)
        except IdentityMismatch as exc:
            _log.info("refused a CSR from %s: %s", identity, exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except InvalidCSR as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CAError as exc:
            self.observe("error")
            _log.error("cannot sign a CSR for %s: %s", identity, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self.observe("issued")
        return ca_pb2.CertificateResponse(
            cert_chain_pem=_PEM_CERTIFICATE.findall(signed.cert_chain_pem),
            root_certs_pem=_PEM_CERTIFICATE.findall(signed.root_certs_pem),
            spiffe_id=signed.spiffe_id,
            not_before=_timestamp(signed.not_before),
            not_after=_timestamp(signed.not_after),
        )

    def _requested_ttl(self, validity_seconds: int) -> timedelta | None:
        if validity_seconds == 0:
            return None
        # Clamp before building a timedelta: an int64 of seconds can overflow one.
        ceiling = int(self._ca.max_workload_ttl.total_seconds())
        return timedelta(seconds=min(validity_seconds, ceiling))


async def _resolve(identity: Identity | Awaitable[Identity]) -> Identity:
    return identity if isinstance(identity, Identity) else await identity


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
