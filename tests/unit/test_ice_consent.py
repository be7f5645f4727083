"""Consent freshness schedule (RFC 7675 §5.1)."""

from __future__ import annotations

import random

import pytest

from ice.consent import CONSENT_INTERVAL, CONSENT_TIMEOUT, ConsentFreshness


def test_requests_every_five_seconds_randomized() -> None:
    consent = ConsentFreshness(0.0, rng=random.Random(7))
    gaps = []
    now = 0.0
    for i in range(200):
        now = consent.next_check
        assert consent.due(now) and not consent.due(now - 1e-6)
        consent.sent(bytes([i % 256]) * 12, now)
        consent.response(bytes([i % 256]) * 12, now + 0.01)
        gaps.append(consent.next_check - now)
    assert all(0.8 * CONSENT_INTERVAL <= g <= 1.2 * CONSENT_INTERVAL for g in gaps)
    assert max(gaps) - min(gaps) > 1.0, "the interval must be randomized"
    assert not consent.expired(now)
    assert consent.requests_sent == 200 and consent.responses == 200


def test_expires_thirty_seconds_after_last_response() -> None:
    consent = ConsentFreshness(0.0, rng=random.Random(1))
    consent.sent(b"a" * 12, 4.0)
    assert consent.response(b"a" * 12, 4.05)
    # requests keep going out but nothing answers
    now = 4.05
    for i in range(10):
        now = consent.next_check
        if now >= 4.05 + CONSENT_TIMEOUT:
            break
        consent.sent(bytes([i]) * 12, now)
        assert not consent.expired(now)
    assert not consent.expired(4.05 + CONSENT_TIMEOUT - 0.001)
    assert consent.expired(4.05 + CONSENT_TIMEOUT)
    # lost is final: a late response does not bring it back
    assert not consent.response(bytes([0]) * 12, 40.0)
    assert consent.expired(100.0) and consent.get_timer() is None
    assert not consent.due(1000.0)


def test_only_our_transactions_refresh() -> None:
    consent = ConsentFreshness(0.0, rng=random.Random(1))
    consent.sent(b"x" * 12, 5.0)
    assert not consent.response(b"y" * 12, 6.0)
    assert consent.last_consent == 0.0
    assert consent.response(b"x" * 12, 6.0)
    assert not consent.response(b"x" * 12, 6.5), "a duplicate response counts once"
    assert consent.last_consent == 6.0


def test_timer_is_next_check_or_expiry() -> None:
    consent = ConsentFreshness(0.0, interval=50.0, timeout=30.0, rng=random.Random(1))
    assert consent.get_timer() == pytest.approx(30.0)
    consent2 = ConsentFreshness(0.0, rng=random.Random(1))
    assert consent2.get_timer() == consent2.next_check


def test_postpone_and_refresh() -> None:
    consent = ConsentFreshness(0.0, rng=random.Random(3))
    t = consent.next_check
    consent.postpone(t)
    assert consent.next_check >= t + 0.8 * CONSENT_INTERVAL
    assert consent.requests_sent == 0
    consent.refresh(20.0)
    assert not consent.expired(49.0) and consent.expired(50.0)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ConsentFreshness(0.0, interval=0)
