"""SDS over ADS: each authenticated proxy gets ``default`` (its identity's certificate chain
and key) and ``ROOTCA`` (the mesh's roots), and new ones before the old certificate expires.

Rotation needs no new snapshot: when the earliest certificate is due, every stream is woken;
each asks for its resources again, the cache issues the renewed certificate, the ``default``
secret's version moves, and only that secret is sent. Envoy swaps the certificate for new
handshakes while established connections carry on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime

from controlplane.ca import CertificateAuthority, Identity, InvalidIdentity, WorkloadCertCache
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import SECRET, CompiledResource
from controlplane.compile.sds import certificate_secret, root_secret
from controlplane.compile.tls import SDS_DEFAULT, SDS_ROOT
from controlplane.xds.hub import Hub

log = logging.getLogger("controlplane.sds")
_MAX_SLEEP = 60.0  # re-check at least this often (clock jumps, new identities)
_MIN_SLEEP = 0.05


class SecretProvider:
    """A hub resource provider: secrets for the identity the proxy's connection proved."""

    def __init__(self, ca: CertificateAuthority, certs: WorkloadCertCache | None = None) -> None:
        self.ca = ca
        self.certs = certs or WorkloadCertCache(ca)
        self._root = CompiledResource(SDS_ROOT, root_secret(ca.root_certs_pem))
        self._lock = threading.Lock()
        self._compiled: dict[Identity, tuple[int, CompiledResource]] = {}
        self.issued = 0
        self.issued_event = asyncio.Event()

    def __call__(self, proxy: Proxy) -> Mapping[str, Mapping[str, CompiledResource]]:
        if not proxy.identity:
            return {}
        try:
            identity = Identity.parse(proxy.identity)
        except InvalidIdentity:
            log.error("proxy %s: identity %r is not a SPIFFE id", proxy.node_id, proxy.identity)
            return {}
        return {SECRET: {SDS_DEFAULT: self.certificate(identity), SDS_ROOT: self._root}}

    def certificate(self, identity: Identity) -> CompiledResource:
        """The ``default`` secret for ``identity``, built once per certificate."""
        cert = self.certs.get(identity)
        with self._lock:
            cached = self._compiled.get(identity)
            if cached is not None and cached[0] == cert.serial_number:
                return cached[1]
            resource = CompiledResource(
                SDS_DEFAULT, certificate_secret(cert.cert_chain_pem, cert.private_key_pem)
            )
            self._compiled[identity] = (cert.serial_number, resource)
            self.issued += 1
        self.issued_event.set()
        log.info(
            "certificate for %s issued (serial %x, valid until %s)",
            identity,
            cert.serial_number,
            cert.not_after.isoformat(),
        )
        return resource

    def renew(self, connected: set[str]) -> int:
        """Renew what is due for identities still connected; forget the others."""
        renewed = 0
        with self._lock:
            known = list(self._compiled)
        for identity in known:
            if identity.spiffe_id not in connected:
                self.certs.discard(identity)
                with self._lock:
                    self._compiled.pop(identity, None)
                continue
            before = self._compiled.get(identity)
            if self.certificate(identity) is not (before[1] if before else None):
                renewed += 1
        return renewed

    def seconds_until_renewal(self, now: datetime | None = None) -> float | None:
        due = self.certs.next_renewal()
        if due is None:
            return None
        return (due - (now or datetime.now(UTC))).total_seconds()


async def rotate_certificates(hub: Hub, provider: SecretProvider) -> None:
    """Run forever: when a certificate is due, renew it and wake every stream to send it."""
    while True:
        wait = provider.seconds_until_renewal()
        if wait is None or wait > 0:
            timeout = _MAX_SLEEP if wait is None else min(max(wait, _MIN_SLEEP), _MAX_SLEEP)
            provider.issued_event.clear()
            try:
                # A newly issued certificate may be due sooner than what we sleep for.
                await asyncio.wait_for(provider.issued_event.wait(), timeout)
            except TimeoutError:
                pass
            continue
        connected = {s.proxy.identity for s in list(hub.streams.values()) if s.proxy}
        renewed = provider.renew(connected)
        if renewed:
            log.info(
                "renewed %d workload certificate(s); pushing to %d streams",
                renewed,
                len(hub.streams),
            )
        for stream in list(hub.streams.values()):
            stream.wake()
