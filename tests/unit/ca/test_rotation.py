from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.ca import CertificateAuthority, Identity, needs_renewal, renewal_time
from controlplane.ca.rotation import certificate_renewal_time, serial_jitter
from tests.support.pki import NOW

START = NOW
END = NOW + timedelta(hours=24)


def test_renewal_is_due_at_half_the_lifetime_without_jitter() -> None:
    assert renewal_time(START, END) == NOW + timedelta(hours=12)


def test_full_jitter_moves_renewal_a_tenth_of_the_lifetime_earlier() -> None:
    assert renewal_time(START, END, jitter=1.0) == NOW + timedelta(hours=12) - timedelta(
        minutes=144
    )


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999, 1.0])
def test_jitter_never_moves_renewal_later_than_half_life(jitter: float) -> None:
    due = renewal_time(START, END, jitter=jitter)

    assert NOW + timedelta(hours=9.6) <= due <= NOW + timedelta(hours=12)


def test_needs_renewal_turns_true_exactly_at_the_renewal_time() -> None:
    due = renewal_time(START, END, jitter=0.5)

    assert not needs_renewal(START, END, due - timedelta(microseconds=1), jitter=0.5)
    assert needs_renewal(START, END, due, jitter=0.5)
    assert needs_renewal(START, END, END + timedelta(days=1), jitter=0.5)


def test_jitter_outside_zero_to_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        renewal_time(START, END, jitter=1.5)


def test_lifetime_that_ends_before_it_starts_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be later"):
        renewal_time(END, START)


def test_serial_jitter_is_stable_and_spread_over_zero_to_one() -> None:
    values = [serial_jitter(serial) for serial in range(0, 1 << 20, 4099)]

    assert serial_jitter(123456789) == serial_jitter(123456789)
    assert all(0.0 <= v < 1.0 for v in values)
    assert min(values) < 0.1 and max(values) > 0.9


def test_day_long_certificate_is_renewed_between_about_9_6_and_12_hours_after_issue(
    ca: CertificateAuthority, reviews: Identity
) -> None:
    cert = ca.issue(reviews, now=NOW)

    due = certificate_renewal_time(cert)

    assert due == renewal_time(
        cert.not_before, cert.not_after, jitter=serial_jitter(cert.serial_number)
    )
    assert NOW + timedelta(hours=9.5) < due < NOW + timedelta(hours=12)
