"""One current workload certificate per identity.

Istio's agent generates a key and asks for a certificate per pod. Here the control plane
issues the key itself, and every proxy that authenticates as the same service account gets the
same key and certificate. That grants nothing new: the certificate names only the service
account, so any of those proxies could already prove that identity. What it costs is
granularity (one leaked key is replaced for all of them at the next renewal); what it buys is
one signature per service account per half-lifetime instead of one per proxy connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from controlplane.ca.authority import CertificateAuthority, WorkloadCertificate
from controlplane.ca.identity import Identity
from controlplane.ca.rotation import certificate_renewal_time


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WorkloadCertCache:
    """Returns a cached certificate for an identity until it is due for renewal."""

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._ca = ca
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[Identity, tuple[WorkloadCertificate, datetime]] = {}

    def get(self, identity: Identity) -> WorkloadCertificate:
        """The current certificate for `identity`, issuing one if none is cached or it is due."""
        now = self._clock()
        with self._lock:
            cached = self._current.get(identity)
            if cached is not None and now < cached[1]:
                return cached[0]
            cert = self._ca.issue(identity, now=now)
            self._current[identity] = (cert, certificate_renewal_time(cert))
            return cert

    def replace_authority(self, ca: CertificateAuthority) -> None:
        """Issue with ``ca`` from now on; every cached certificate is replaced on its next
        ``get`` (the old signer may be leaving the trust bundle soon)."""
        with self._lock:
            self._ca = ca
            self._current.clear()

    def expiries(self) -> dict[Identity, datetime]:
        """When each cached certificate expires."""
        with self._lock:
            return {identity: cert.not_after for identity, (cert, _) in self._current.items()}

    def next_renewal(self) -> datetime | None:
        """The earliest renewal time among cached certificates: when to push new secrets."""
        with self._lock:
            return min((due for _, due in self._current.values()), default=None)

    def discard(self, identity: Identity) -> None:
        """Forget `identity`, e.g. when its last proxy disconnects."""
        with self._lock:
            self._current.pop(identity, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._current)
