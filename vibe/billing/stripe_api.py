"""Talking back to Stripe: one `stripe.StripeClient` per process, asynchronous, behind a breaker.

The client is the `stripe` library's own, with its aiohttp HTTP client (`…_async` calls: the
event loop never blocks), its network retries (`STRIPE_NETWORK_RETRIES`: a call that failed on
the network or with 409/5xx is sent again with the same idempotency key, which the library makes
for every POST) and `STRIPE_API_BASE` (Stripe's by default; an emulator's in tests). Every call
goes through `StripeApi.call`, behind the circuit breaker `stripe:api` (`/health`,
`/metrics`): Stripe unreachable or answering 5xx counts as a failure; an answer about the request
(a declined card, an invalid parameter) is Stripe working, and counts as a success.

Without `STRIPE_SECRET_KEY` there is no client: catch-up, reconcile, checkout, the portal and
plan changes through Stripe are off, and `/health` and `check-config` say so (`disabled_reason`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import stripe
from aiohttp import web

from vibe.config import Settings
from vibe.keys import SETTINGS, SHUTDOWN
from vibe.ops.keys import BREAKERS
from vibe.ops.resilience import BreakerRegistry, CircuitBreaker, parse_retry_after
from vibe.web.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")
BREAKER = "stripe:api"
OFF = "STRIPE_SECRET_KEY is not set: catch-up, reconcile, checkout, the portal and plan changes in Stripe are off"


class StripeUnavailable(Exception):
    """Stripe could not be reached, failed (5xx), asked vibe to slow down (429), or its breaker is
    open; `retry_after`: seconds to wait before trying again."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)


def disabled_reason(settings: Settings) -> str | None:
    """Why the features that call Stripe are off, or None when they are on."""
    return None if settings.billing.secret_key else OFF


class StripeApi:
    def __init__(self, settings: Settings, breaker: CircuitBreaker):
        billing = settings.billing
        self.http = stripe.AIOHTTPClient(timeout=billing.api_timeout_seconds)
        self.client = stripe.StripeClient(
            billing.secret_key, base_addresses={"api": billing.api_base},
            max_network_retries=billing.network_retries, http_client=self.http)
        self.breaker = breaker
        self.base = billing.api_base
        logging.getLogger("stripe").setLevel(logging.WARNING)  # the library logs every request at INFO

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """`await fn(*args, **kwargs)` (a `…_async` method of `self.client`) behind the breaker."""
        if not self.breaker.allow():
            raise StripeUnavailable("Stripe's API keeps failing; vibe stopped calling it for a while "
                                    f"(circuit breaker {BREAKER} is open)", self.breaker.retry_in())
        try:
            result = await fn(*args, **kwargs)
        except stripe.RateLimitError as exc:  # Stripe works, vibe is too fast: wait, not a failure
            self.breaker.record_success()
            retry = parse_retry_after((exc.headers or {}).get("Retry-After")) or 2.0
            raise StripeUnavailable(f"Stripe asks to slow down (429): {exc.user_message}", retry) from exc
        except stripe.APIConnectionError as exc:
            self.breaker.record_failure()
            cause = exc.__cause__
            why = f"{type(cause).__name__}: {cause}" if cause else _message(exc)
            raise StripeUnavailable(f"Stripe is unreachable at {self.base} ({why})", self._retry(exc)) from exc
        except stripe.APIError as exc:
            self.breaker.record_failure()
            raise StripeUnavailable(f"Stripe is unavailable: {_message(exc)}", self._retry(exc)) from exc
        except stripe.StripeError as exc:
            if (exc.http_status or 0) >= 500:
                self.breaker.record_failure()
                raise StripeUnavailable(f"Stripe is unavailable: {_message(exc)}", self._retry(exc)) from exc
            self.breaker.record_success()
            raise
        self.breaker.record_success()
        return result

    def _retry(self, exc: stripe.StripeError) -> float:
        return parse_retry_after((exc.headers or {}).get("Retry-After")) or max(5.0, self.breaker.retry_in())

    async def close(self) -> None:
        await self.http.close_async()


def _message(exc: stripe.StripeError) -> str:
    return " ".join((exc.user_message or str(exc) or type(exc).__name__).split())


def breaker_of(app: web.Application) -> CircuitBreaker:
    if BREAKERS not in app:
        app[BREAKERS] = BreakerRegistry()
    return app[BREAKERS].get(BREAKER, failure_threshold=5, reset_timeout=30.0)


def api_error(exc: Exception) -> ApiError:
    """A Stripe failure as the caller's JSON error: never a 500."""
    if isinstance(exc, StripeUnavailable):
        return ApiError(503, "stripe_unavailable", str(exc),
                        headers={"Retry-After": str(int(exc.retry_after + 0.999))})
    if isinstance(exc, stripe.CardError):
        return ApiError(402, "card_error", _message(exc), details={"decline_code": getattr(exc, "code", None)})
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return ApiError(503, "stripe_not_authorized", "Stripe refused vibe's STRIPE_SECRET_KEY for this call.")
    if isinstance(exc, stripe.IdempotencyError):
        return ApiError(409, "idempotency_conflict", _message(exc))
    if isinstance(exc, stripe.InvalidRequestError):
        return ApiError(400, "stripe_invalid_request", _message(exc), details={"param": getattr(exc, "param", None)})
    if isinstance(exc, stripe.StripeError):
        return ApiError(400 if 400 <= (exc.http_status or 0) < 500 else 503, "stripe_error", _message(exc))
    raise exc


@contextlib.asynccontextmanager
async def open_stripe(settings: Settings, breaker: CircuitBreaker | None = None) -> AsyncIterator[StripeApi]:
    """A client for a command (`stripe catch-up`, `stripe reconcile`), closed afterwards."""
    if settings.billing.secret_key == "":
        raise RuntimeError(OFF)
    api = StripeApi(settings, breaker or CircuitBreaker(BREAKER))
    try:
        yield api
    finally:
        await api.close()


async def stripe_api_ctx(app: web.Application) -> AsyncIterator[None]:
    """The service's client (when a key is set), stored under STRIPE_API; closed at the stop."""
    from vibe.billing.keys import STRIPE_API

    settings = app[SETTINGS]
    if not settings.billing.secret_key:
        yield
        return
    api = StripeApi(settings, breaker_of(app))
    app[STRIPE_API] = api
    try:
        yield
    finally:
        await app[SHUTDOWN].wait("Stripe API client", api.close())
