"""Backoff with full jitter and Retry-After, and the circuit breaker's states."""

import pytest

from vibe.ops.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerRegistry,
    CircuitBreaker,
    backoff_delay,
    parse_retry_after,
)


def test_backoff_is_full_jitter_under_an_exponential_cap():
    highest = lambda low, high: high  # noqa: E731
    lowest = lambda low, high: low  # noqa: E731
    assert [backoff_delay(n, base=2, cap=60, rng=highest) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(5, base=2, cap=60, rng=lowest) == 0
    for attempt in range(1, 10):
        assert 0 <= backoff_delay(attempt, base=1, cap=30) <= min(30, 2 ** (attempt - 1))


def test_retry_after_is_a_floor_even_beyond_the_cap():
    lowest = lambda low, high: low  # noqa: E731
    assert backoff_delay(1, base=1, cap=60, retry_after=12, rng=lowest) == 12
    assert backoff_delay(1, base=1, cap=5, retry_after=120, rng=lowest) == 120
    assert backoff_delay(1, base=1, cap=5, retry_after=10**9, retry_after_limit=3600, rng=lowest) == 3600


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == pytest.approx(60.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_the_timeout():
    clock = Clock()
    breaker = CircuitBreaker("email:test", failure_threshold=3, reset_timeout=10, clock=clock)
    assert breaker.state == CLOSED
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == OPEN and breaker.opened == 1
    assert not breaker.allow() and breaker.rejected == 1 and breaker.retry_in() == 10
    clock.now += 10
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # one probe ...
    assert not breaker.allow()  # ... at a time
    breaker.record_failure()  # the probe failed: open again
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()
    snap = breaker.snapshot()
    assert snap["name"] == "email:test" and snap["state"] == "closed" and snap["failures"] == 6


def test_registry_keeps_one_breaker_per_name():
    registry = BreakerRegistry()
    first = registry.get("email:smtp", failure_threshold=2)
    assert registry.get("email:smtp") is first and first.failure_threshold == 2
    registry.get("jwks")
    assert sorted(registry.snapshot()) == ["email:smtp", "jwks"]
