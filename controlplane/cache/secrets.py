"""The SDS cache: each authenticated proxy gets ``default`` (its identity's certificate chain
and key) and ``ROOTCA`` (the mesh's roots), and new ones before the old certificate expires.

It implements ``ConfigCache`` (``interface.py``) for the Secret type only; a ``CacheMux``
routes that type here and the rest to the compiled cache. Secrets are per identity, not per
proxy: every proxy of one service account gets the same map, built once per certificate.
The identity is the one the stream authenticated (``Proxy.identity``, set by the xDS
server's authenticator), never a claim.

Rotation needs no new snapshot: when the earliest certificate is due (``rotate``), it is
renewed and only the watches of that identity are woken; each stream asks again, the
``default`` secret's version has moved, and only that secret is sent. Envoy swaps the
certificate for new handshakes while established connections carry on. Certificates of
identities no longer watched are forgotten at the next renewal.

Gateway credentials (``credentials.GatewayCredentials``, the Secrets that Gateway servers name
by ``credentialName``) are served beside them to gateway proxies (router mode) only, and only
from the namespace of the proved identity; a change of those Secrets wakes the gateways'
watches in that namespace. (istiod asks the apiserver whether the proxy's service account
may read Secrets there, which Istio's charts grant to gateways; sidecars of the namespace
get no credentials here.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType

from controlplane.api.text import printable
from controlplane.ca import CertificateAuthority, Identity, InvalidIdentity, WorkloadCertCache
from controlplane.cache.credentials import GatewayCredentials
from controlplane.cache.interface import NOTHING, ResourceMap, Wake
from controlplane.compile.proxy import ROUTER, Proxy
from controlplane.compile.resources import SECRET, CompiledResource
from controlplane.compile.sds import certificate_secret, root_secret
from controlplane.compile.tls import SDS_DEFAULT, SDS_ROOT

log = logging.getLogger("controlplane.sds")
_MAX_SLEEP = 60.0  # re-check at least this often (clock jumps, new identities)
_MIN_SLEEP = 0.05


class SecretCache:
    """Secrets for the identity each proxy's connection proved; see the module docstring."""

    def __init__(self, ca: CertificateAuthority, certs: WorkloadCertCache | None = None) -> None:
        self.ca = ca
        self.certs = certs or WorkloadCertCache(ca)
        self._root = CompiledResource(SDS_ROOT, root_secret(ca.root_certs_pem))
        self._lock = threading.Lock()
        # identity -> (serial, the default secret, the map served for it)
        self._compiled: dict[Identity, tuple[int, CompiledResource, ResourceMap]] = {}
        self._watches: dict[Identity, dict[_SecretWatch, None]] = {}
        self.issued = 0
        self.issued_event = asyncio.Event()
        self.on_issued: Callable[[], None] = lambda: None  # istiod's issuance count
        self.credentials: GatewayCredentials | None = None
        # identity -> (its own map, its namespace's credentials, the two merged)
        self._merged: dict[Identity, tuple[ResourceMap, ResourceMap, ResourceMap]] = {}

    def serve_credentials(self, credentials: GatewayCredentials) -> None:
        """Serve ``credentials`` to proxies whose proved identity is in their namespace."""
        self.credentials = credentials
        credentials.subscribe(self._credentials_changed)

    def _credentials_changed(self, namespaces: frozenset[str]) -> None:
        holders = [
            watch
            for identity, watches in list(self._watches.items())
            if identity.namespace in namespaces
            for watch in watches
            if watch.gateway
        ]
        for watch in holders:
            watch.wake()

    # ---- ConfigCache ----------------------------------------------------------------------

    @property
    def change_seen_at(self) -> float:
        return 0.0  # a renewal is no configuration change

    def fetch(self, proxy: Proxy, type_url: str) -> ResourceMap:
        identity = self._identity(proxy) if type_url == SECRET else None
        return NOTHING if identity is None else self.served(identity, _is_gateway(proxy))

    def watch(self, proxy: Proxy, wake: Wake) -> _SecretWatch:
        watch = _SecretWatch(self, self._identity(proxy), wake, _is_gateway(proxy))
        if watch.identity is not None:
            self._watches.setdefault(watch.identity, {})[watch] = None
        return watch

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Secrets have no generations: ``listener`` is never called."""

    def _forget(self, watch: _SecretWatch) -> None:
        identity = watch.identity
        watches = self._watches.get(identity) if identity is not None else None
        if identity is not None and watches is not None:
            watches.pop(watch, None)
            if not watches:
                del self._watches[identity]

    # ---- certificates ---------------------------------------------------------------------

    @staticmethod
    def _identity(proxy: Proxy) -> Identity | None:
        if not proxy.identity:
            return None
        try:
            return Identity.parse(proxy.identity)
        except InvalidIdentity:
            log.error(
                "proxy %s: identity %s is not a SPIFFE id",
                printable(proxy.node_id),
                printable(repr(proxy.identity)),
            )
            return None

    def served(self, identity: Identity, gateway: bool = False) -> ResourceMap:
        """What a proxy proved as ``identity`` may have: its own secrets and, for a gateway,
        the credentials of its namespace (one shared map while neither changes)."""
        own = self.secrets(identity)
        credentials = (
            self.credentials.for_namespace(identity.namespace)
            if self.credentials is not None and gateway
            else NOTHING
        )
        if not credentials:
            return own
        cached = self._merged.get(identity)
        if cached is not None and cached[0] is own and cached[1] is credentials:
            return cached[2]
        merged: ResourceMap = MappingProxyType({**credentials, **own})
        self._merged[identity] = (own, credentials, merged)
        return merged

    def secrets(self, identity: Identity) -> ResourceMap:
        """``default`` and ``ROOTCA`` for ``identity``: one map per certificate."""
        self.certificate(identity)
        return self._compiled[identity][2]

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
            served = {SDS_DEFAULT: resource, SDS_ROOT: self._root}
            self._compiled[identity] = (cert.serial_number, resource, served)
            self.issued += 1
        self.on_issued()
        self.issued_event.set()
        log.info(
            "certificate for %s issued (serial %x, valid until %s)",
            identity,
            cert.serial_number,
            cert.not_after.isoformat(),
        )
        return resource

    def replace_authority(self, ca: CertificateAuthority) -> None:
        """A root rotation's step: serve ``ca``'s trust bundle as ``ROOTCA`` and re-issue
        every watched identity's certificate with ``ca``, then push both to every stream.

        Proxies trust old and new roots during a rotation when the operator's bundle holds
        both (``root-cert.pem`` with the two roots); see ``controlplane.ca.rotation``."""
        with self._lock:
            self.ca = ca
            self._root = CompiledResource(SDS_ROOT, root_secret(ca.root_certs_pem))
            self._compiled.clear()
        self._merged.clear()
        self.certs.replace_authority(ca)
        holders = [w for watches in list(self._watches.values()) for w in watches]
        log.info(
            "mesh CA replaced: %d root(s) in the trust bundle, signing with %s; pushing new "
            "secrets to %d streams",
            len(ca.roots),
            ca.certificate.subject.rfc4514_string(),
            len(holders),
        )
        for watch in holders:
            watch.wake()

    def expiries(self) -> dict[Identity, datetime]:
        """When each issued workload certificate still served expires."""
        return self.certs.expiries()

    def renew(self) -> set[Identity]:
        """Renew what is due for identities still watched; forget the others. Returns the
        identities whose certificate changed."""
        renewed: set[Identity] = set()
        with self._lock:
            known = list(self._compiled)
        for identity in known:
            if identity not in self._watches:
                self.certs.discard(identity)
                with self._lock:
                    self._compiled.pop(identity, None)
                self._merged.pop(identity, None)
                continue
            before = self._compiled.get(identity)
            if self.certificate(identity) is not (before[1] if before else None):
                renewed.add(identity)
        return renewed

    def seconds_until_renewal(self, now: datetime | None = None) -> float | None:
        due = self.certs.next_renewal()
        if due is None:
            return None
        return (due - (now or datetime.now(UTC))).total_seconds()

    async def rotate(self) -> None:
        """Run forever: when a certificate is due, renew it and wake the streams holding it."""
        while True:
            wait = self.seconds_until_renewal()
            if wait is None or wait > 0:
                timeout = _MAX_SLEEP if wait is None else min(max(wait, _MIN_SLEEP), _MAX_SLEEP)
                self.issued_event.clear()
                try:
                    # A newly issued certificate may be due sooner than what we sleep for.
                    await asyncio.wait_for(self.issued_event.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            self.renew_and_wake()

    def renew_and_wake(self) -> set[Identity]:
        """Renew what is due and wake the watches of the identities renewed, only those."""
        renewed = self.renew()
        holders = [w for i in renewed for w in self._watches.get(i, ())]
        if renewed:
            log.info(
                "renewed %d workload certificate(s); pushing to %d streams",
                len(renewed),
                len(holders),
            )
        for watch in holders:
            watch.wake()
        return renewed


def _is_gateway(proxy: Proxy) -> bool:
    return proxy.proxy_type == ROUTER


class _SecretWatch:
    """A proxy's watch on the secrets of the identity it proved (None: it proved none)."""

    __slots__ = ("_cache", "gateway", "identity", "wake")

    def __init__(
        self, cache: SecretCache, identity: Identity | None, wake: Wake, gateway: bool = False
    ) -> None:
        self._cache = cache
        self.identity = identity
        self.gateway = gateway
        self.wake = wake

    def resources(self, type_url: str) -> ResourceMap:
        if type_url != SECRET or self.identity is None:
            return NOTHING
        return self._cache.served(self.identity, self.gateway)

    def cancel(self) -> None:
        self._cache._forget(self)
