from __future__ import annotations

from datetime import datetime, timedelta

from controlplane.ca import (
    CABundle,
    CertificateAuthority,
    Identity,
    WorkloadCertCache,
    WorkloadCertificate,
)
from controlplane.ca.rotation import certificate_renewal_time
from tests.support.pki import NOW


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class _CountingCA(CertificateAuthority):
    issued = 0

    def issue(
        self, identity: Identity, ttl: timedelta | None = None, *, now: datetime | None = None
    ) -> WorkloadCertificate:
        self.issued += 1
        return super().issue(identity, ttl, now=now)


def _cache(ca: CertificateAuthority, clock: _Clock) -> WorkloadCertCache:
    return WorkloadCertCache(ca, clock=clock)


def test_proxies_of_one_service_account_share_one_certificate_until_renewal(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    clock = _Clock(NOW)
    cache = _cache(ca, clock)

    first = cache.get(reviews)
    clock.now = certificate_renewal_time(first) - timedelta(seconds=1)

    assert cache.get(reviews) is first


def test_certificate_is_replaced_once_its_renewal_time_has_come(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    clock = _Clock(NOW)
    cache = _cache(ca, clock)
    first = cache.get(reviews)

    clock.now = certificate_renewal_time(first)
    second = cache.get(reviews)

    assert second.serial_number != first.serial_number
    assert second.not_before == clock.now.replace(microsecond=0) - timedelta(minutes=1)
    assert cache.get(reviews) is second


def test_cache_hits_do_not_sign(root_bundle: CABundle, reviews: Identity) -> None:
    ca = _CountingCA(root_bundle, now=NOW)
    cache = _cache(ca, _Clock(NOW))

    for _ in range(100):
        cache.get(reviews)

    assert ca.issued == 1


def test_each_identity_has_its_own_certificate(ca: CertificateAuthority) -> None:
    cache = _cache(ca, _Clock(NOW))
    reviews = Identity("cluster.local", "default", "reviews")
    ratings = Identity("cluster.local", "default", "ratings")

    assert cache.get(reviews).spiffe_id.endswith("/sa/reviews")
    assert cache.get(ratings).spiffe_id.endswith("/sa/ratings")
    assert len(cache) == 2


def test_next_renewal_is_the_earliest_due_certificate(ca: CertificateAuthority) -> None:
    clock = _Clock(NOW)
    cache = _cache(ca, clock)
    assert cache.next_renewal() is None

    early = cache.get(Identity("cluster.local", "default", "early"))
    # Later by more than the largest jitter (a tenth of 24 h), so it is surely due later.
    clock.now = NOW + timedelta(hours=3)
    cache.get(Identity("cluster.local", "default", "late"))

    assert cache.next_renewal() == certificate_renewal_time(early)


def test_discarded_identity_gets_a_new_certificate_next_time(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cache = _cache(ca, _Clock(NOW))
    first = cache.get(reviews)

    cache.discard(reviews)

    assert len(cache) == 0
    assert cache.get(reviews).serial_number != first.serial_number
