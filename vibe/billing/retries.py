"""What a run of a Stripe event that raised means for it: its status, note, error, next attempt.

A failing handler's event is `failed` and retried with exponential backoff and full jitter
(STRIPE_RETRY_BASE_SECONDS, STRIPE_RETRY_MAX_SECONDS), from the stored row; after
STRIPE_MAX_ATTEMPTS it is `dead`. An event that needs configuration is `failed` with a note
naming the setting and no next attempt. An outcome (`vibe.billing.outcomes`) is its status; an
event waiting for its customer is rechecked now and then until STRIPE_WAIT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
import random
import traceback
from typing import Any

from vibe.billing.outcomes import EventOutcome, WaitForCustomer
from vibe.billing.settings import BillingSettings
from vibe.billing.state import ConfigurationNeeded
from vibe.web.errors import ApiError

log = logging.getLogger("vibe.billing.dispatcher")  # where these lines have always been logged

NEEDS_CONFIGURATION = "needs configuration"  # how the note of such an event starts


def backoff(billing: BillingSettings, attempts: int) -> float:
    """Full-jitter exponential backoff for the `attempts`-th failure."""
    cap = min(billing.retry_max_seconds, billing.retry_base_seconds * 2 ** (attempts - 1))
    return random.uniform(cap / 2, cap)


def outcome(billing: BillingSettings, exc: Exception, row: dict[str, Any], now: float, attempts: int) -> tuple:
    """status, note, error, next_attempt_at, waiting_for, attempts after `exc`."""
    if isinstance(exc, WaitForCustomer):
        age = now - float(row["received_at"])
        if age > billing.wait_timeout_seconds:
            return "dead", str(exc), f"gave up: {exc}", None, exc.customer_id, attempts
        # Woken by the link (see the dispatcher's _wake_linked); rechecked now and then all the same.
        recheck = min(60.0, max(1.0, age), billing.retry_max_seconds)
        return "waiting", str(exc), None, now + recheck, exc.customer_id, attempts
    if isinstance(exc, EventOutcome):
        return exc.status, str(exc) or None, None, None, None, attempts
    error = describe(exc)
    if isinstance(exc, ConfigurationNeeded):  # no retry can fix it: no next attempt, no count
        note = f"{NEEDS_CONFIGURATION} ({exc.setting}): {exc} (then: python run.py events replay --failed)"
        log.error("stripe event %s (%s) %s", row["id"], row["type"], note)
        return "failed", note, error, None, None, attempts
    attempts += 1  # the handler failed: retry later, from the stored row
    if attempts >= billing.max_attempts:
        log.error("stripe event %s (%s) dead after %d attempts: %s", row["id"], row["type"], attempts, error)
        return "dead", None, error, None, None, attempts
    log.warning("stripe event %s (%s) failed (attempt %d): %s", row["id"], row["type"], attempts, error)
    return "failed", None, error, now + backoff(billing, attempts), None, attempts


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.message}"[:2000]
    return "".join(traceback.format_exception_only(exc)).strip()[:2000]
