"""Generic resilience: exponential backoff with full jitter, and a named circuit breaker.

    delay = backoff_delay(attempt, base=2.0, cap=3600.0, retry_after=response_hint)

    breaker = breakers.get("email:resend")          # one per downstream, kept in an AppKey
    if not breaker.allow():                          # open: do not call, try later
        ...
    try:
        call()
    except Transient:
        breaker.record_failure()
    else:
        breaker.record_success()

States: `closed` (calls pass; `failure_threshold` failures in a row open it), `open` (calls are
refused for `reset_timeout` seconds), `half_open` (one probe at a time is let through: its
success closes the breaker, its failure opens it again). Every breaker counts its calls,
failures, refusals and openings, for /health and /metrics.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Iterator

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None,
                  retry_after_limit: float = 86400.0,
                  rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]. A server's `Retry-After` is a
    floor: never retry sooner than it asked, even beyond `cap` (up to `retry_after_limit`, so a
    server's mistake cannot park work for a year).
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = rng(0.0, ceiling)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, retry_after_limit))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        self._probing = False
        self.consecutive_failures = 0
        self.calls = 0
        self.failures = 0
        self.successes = 0
        self.rejected = 0
        self.opened = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = HALF_OPEN
            self._probing = False
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time may."""
        state = self.state
        if state == CLOSED or (state == HALF_OPEN and not self._probing):
            self._probing = state == HALF_OPEN
            self.calls += 1
            return True
        self.rejected += 1
        return False

    def record_success(self) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        self._probing = False
        self._state = CLOSED

    def record_failure(self) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self._probing = False
        if self._state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            if self._state != OPEN:
                self.opened += 1
            self._state = OPEN
            self._opened_at = self._clock()

    def snapshot(self) -> dict:
        return {"name": self.name, "state": self.state, "calls": self.calls, "successes": self.successes,
                "failures": self.failures, "rejected": self.rejected, "opened": self.opened,
                "consecutive_failures": self.consecutive_failures}


class BreakerRegistry:
    """The app's breakers by name (stored under the BREAKERS AppKey)."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, **options) -> CircuitBreaker:
        """The breaker called `name`, created with `options` the first time."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(name, **options)
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def snapshot(self) -> dict[str, dict]:
        return {b.name: b.snapshot() for b in self}
