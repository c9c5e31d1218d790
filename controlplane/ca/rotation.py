"""When a workload certificate should be replaced.

Like Istio's agent, renew at about half of a certificate's lifetime: a control plane that is
down for a while leaves proxies half a lifetime to reconnect. Jitter moves the renewal earlier
(never later) by up to a tenth of the lifetime, so that certificates issued together, e.g. for a
whole fleet after a restart, are not all renewed in the same instant. The jitter is an input,
not a random draw, so every function here is pure; `serial_jitter` derives a stable one from a
certificate's random serial number.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from controlplane.ca.authority import SignedCertificate
from controlplane.ca.bundle import CABundle

RENEWAL_FRACTION = 0.5
MAX_JITTER_FRACTION = 0.1
_JITTER_BITS = 16


def renewal_time(not_before: datetime, not_after: datetime, *, jitter: float = 0.0) -> datetime:
    """Half-way through [not_before, not_after], earlier by `jitter` (0..1) tenths of it."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, not {jitter}")
    if not_after <= not_before:
        raise ValueError(f"not_after {not_after} must be later than not_before {not_before}")
    lifetime = not_after - not_before
    return not_before + lifetime * (RENEWAL_FRACTION - MAX_JITTER_FRACTION * jitter)


def needs_renewal(
    not_before: datetime, not_after: datetime, now: datetime, *, jitter: float = 0.0
) -> bool:
    """Whether a certificate valid over [not_before, not_after] should be replaced at `now`."""
    return now >= renewal_time(not_before, not_after, jitter=jitter)


def serial_jitter(serial_number: int) -> float:
    """A jitter in [0, 1) that is fixed for a certificate and spread across certificates."""
    return (serial_number % (1 << _JITTER_BITS)) / (1 << _JITTER_BITS)


def certificate_renewal_time(cert: SignedCertificate) -> datetime:
    """When `cert` should be replaced, with its serial-derived jitter."""
    return renewal_time(cert.not_before, cert.not_after, jitter=serial_jitter(cert.serial_number))


def root_rotation_steps(old: CABundle, new: CABundle) -> tuple[CABundle, CABundle, CABundle]:
    """The three bundles of a root rotation without a failed handshake, written to the key
    store in turn (the control plane reloads each; wait until every proxy holds one before
    writing the next):

    1. the old signer, trusting old and new roots: every proxy learns to trust the new root;
    2. the new signer, still trusting both: certificates are re-issued under the new root,
       and a peer still presenting an old-root certificate is trusted meanwhile;
    3. the new signer, trusting the new root only.

    This is Istio's plugged-in CA procedure (a ``root-cert.pem`` with both roots while the
    ``cacerts`` Secret changes), with the steps named.
    """
    roots = _distinct_pem(old.root_cert_pem, new.root_cert_pem)
    return (
        replace(old, root_cert_pem=roots),
        replace(new, root_cert_pem=roots),
        new,
    )


def _distinct_pem(*bundles: str) -> str:
    seen: list[str] = []
    for text in bundles:
        for block in text.split("-----END CERTIFICATE-----"):
            block = block.strip()
            if block:
                pem = block + "\n-----END CERTIFICATE-----\n"
                if pem not in seen:
                    seen.append(pem)
    return "".join(seen)
