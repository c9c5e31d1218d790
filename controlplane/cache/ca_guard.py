"""The mesh CA's guard: reloads the CA when its key store changes (a root rotation's steps),
exports the expiry of the root and of every issued certificate, and reports a root close to
its expiry (the finding of ``controlplane.api.certificates``) as a log line, on the debug
port's status and, in cluster mode, as a Warning Event.

A root rotation, as istiod does it with a plugged-in CA (it watches ``cacerts`` and reloads
it): the operator (or ``controlplane.ca.rotation.root_rotation_steps``) writes three bundles
in turn, waiting for every proxy to hold each before the next:

1. the old signer, with ``root-cert.pem`` = old + new roots: every proxy learns to trust both;
2. the new signer, still with both roots: every certificate is re-issued under the new root,
   and a proxy not yet re-issued is still trusted;
3. the new signer with only the new root: the old root is gone.

Each reload replaces the ``ROOTCA`` and ``default`` secrets of every stream at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from controlplane.api.certificates import root_expiry_issue
from controlplane.api.issues import Issue, Level
from controlplane.ca import CertificateAuthority, KeyStore
from controlplane.ca.bundle import CABundle
from controlplane.cache.metrics import XdsMetrics
from controlplane.cache.secrets import SecretCache

log = logging.getLogger("controlplane.ca")


class CaGuard:
    """``keystore`` holds the CA's bundle (a directory or Secrets); ``build`` makes a CA of a bundle
    (raises when it cannot sign); ``on_authority`` is told of every CA replaced (the
    CertificateService signs with it too); ``on_finding`` of every new root-expiry finding."""

    def __init__(
        self,
        provider: SecretCache,
        keystore: KeyStore,
        build: Callable[[CABundle], CertificateAuthority],
        *,
        on_authority: Callable[[CertificateAuthority], None] = lambda ca: None,
        on_finding: Callable[[Issue], None] = lambda issue: None,
        poll: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.provider = provider
        self.keystore = keystore
        self.build = build
        self.on_authority = on_authority
        self.on_finding = on_finding
        self.poll = poll
        self.clock = clock
        self.bundle: CABundle | None = None
        self.finding: Issue | None = None
        self.reloads = 0
        self.refused: str | None = None  # why the key store's current content was not loaded

    @property
    def ca(self) -> CertificateAuthority:
        return self.provider.ca

    # ---- metrics --------------------------------------------------------------------------

    def register(self, metrics: XdsMetrics) -> None:
        istio = metrics.istio

        def root_expiry() -> dict[tuple[str, ...], float]:
            return {(): self.ca.signing_root.not_valid_after_utc.timestamp()}

        def root_seconds() -> dict[tuple[str, ...], float]:
            left = self.ca.signing_root.not_valid_after_utc - self.clock()
            return {(): left.total_seconds()}

        def chain_expiry() -> dict[tuple[str, ...], float]:
            return {(): self.ca.chain_not_after.timestamp()}

        def chain_seconds() -> dict[tuple[str, ...], float]:
            return {(): (self.ca.chain_not_after - self.clock()).total_seconds()}

        istio.gauge(
            "citadel_server_root_cert_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel root cert will expire.",
            root_expiry,
        )
        istio.gauge(
            "citadel_server_root_cert_expiry_seconds",
            "The time remaining, in seconds, before the root cert will expire.",
            root_seconds,
        )
        istio.gauge(
            "citadel_server_cert_chain_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel cert chain will expire.",
            chain_expiry,
        )
        istio.gauge(
            "citadel_server_cert_chain_expiry_seconds",
            "The time remaining, in seconds, before the cert chain will expire.",
            chain_seconds,
        )
        metrics.gauge(
            "controlplane_ca_root_expiry_timestamp_seconds",
            "When each root of the trust bundle expires (several during a rotation).",
            lambda: {
                (r.subject.rfc4514_string(), format(r.serial_number, "x")): (
                    r.not_valid_after_utc.timestamp()
                )
                for r in self.ca.roots
            },
            ("subject", "serial"),
        )
        metrics.gauge(
            "controlplane_ca_workload_cert_expiry_timestamp_seconds",
            "When the workload certificate served to each identity expires.",
            lambda: {(i.spiffe_id,): t.timestamp() for i, t in self.provider.expiries().items()},
            ("identity",),
        )
        self.provider.on_issued = istio.citadel_issued.inc

    def describe(self) -> dict[str, object]:
        """What ``/debug/ca`` shows: the roots, the signer, the finding, the last refusal."""
        ca = self.ca
        return {
            "roots": [
                {
                    "subject": r.subject.rfc4514_string(),
                    "serial": format(r.serial_number, "x"),
                    "not_after": r.not_valid_after_utc.isoformat(),
                }
                for r in ca.roots
            ],
            "signer": ca.certificate.subject.rfc4514_string(),
            "signing_root_not_after": ca.signing_root.not_valid_after_utc.isoformat(),
            "reloads": self.reloads,
            "refused": self.refused,
            "findings": [] if self.finding is None else [str(self.finding)],
            "workload_certificates": {
                i.spiffe_id: t.isoformat()
                for i, t in sorted(self.provider.expiries().items(), key=lambda kv: kv[0].spiffe_id)
            },
        }

    # ---- the loop -------------------------------------------------------------------------

    def check_expiry(self) -> Issue | None:
        """Compute the root-expiry finding; report it when it is new or changed level."""
        root = self.ca.signing_root
        issue = root_expiry_issue(
            root.subject.rfc4514_string(), root.not_valid_after_utc, self.clock()
        )
        before = self.finding
        self.finding = issue
        if issue is not None and (before is None or before.code != issue.code):
            level = logging.ERROR if issue.severity is Level.ERROR else logging.WARNING
            log.log(level, "%s", issue)
            self.on_finding(issue)
        return issue

    def reload(self, bundle: CABundle) -> bool:
        """Serve ``bundle`` if it can sign; keep the current CA (and say why) if not."""
        try:
            ca = self.build(bundle)
        except Exception as exc:  # an operator's half-written or wrong bundle
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self.refused:
                log.error(
                    "the mesh CA's new key material was not loaded (%s); still signing "
                    "with the current one",
                    reason,
                )
            self.refused = reason
            return False
        self.refused = None
        self.bundle = bundle
        self.provider.replace_authority(ca)
        self.on_authority(ca)
        self.reloads += 1
        self.check_expiry()
        return True

    async def run(self) -> None:
        """Poll the key store every ``poll`` seconds; check the root's expiry as often."""
        self.bundle = await asyncio.to_thread(self.keystore.load)
        self.check_expiry()
        while True:
            await asyncio.sleep(self.poll)
            try:
                bundle = await asyncio.to_thread(self.keystore.load)
            except Exception as exc:
                log.warning("reading the mesh CA's key store failed: %s", exc)
                continue
            if bundle is not None and bundle != self.bundle:
                self.reload(bundle)
            self.check_expiry()
