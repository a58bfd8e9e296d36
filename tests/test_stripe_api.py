"""The Stripe client (issue 16): off, and saying so, without STRIPE_SECRET_KEY; with one, the
`stripe` library's async client against STRIPE_API_BASE (the emulator), behind the breaker, with
Stripe's errors turned into clear JSON errors (402, 400, 503 + Retry-After), never a 500."""

import json

import pytest
import stripe
from conftest import run_cli

from vibe.billing.keys import STRIPE_API
from vibe.billing.stripe_api import StripeUnavailable, api_error

OFF = "STRIPE_SECRET_KEY is not set: catch-up, reconcile, checkout, the portal and plan changes in Stripe are off"


async def test_without_a_key_there_is_no_client_and_health_and_check_config_say_so(service, env):
    assert STRIPE_API not in service.app
    health = await (await service.client.get("/health")).json()
    assert health["functions"]["stripe-webhook"]["stripe_api"] == {"enabled": False, "reason": OFF}
    assert health["status"] == "healthy"  # off is a choice, not a fault
    code, out, _ = await run_cli("check-config", "--json", env=env)
    row = next(r for r in json.loads(out)["variables"] if r["name"] == "STRIPE_SECRET_KEY")
    assert row["state"] == "unset" and "catch-up, reconcile, checkout, portal" in row["note"]


async def test_with_a_key_the_client_calls_stripe_api_base(start_service, stripe_emulator):
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0")
    api = service.app[STRIPE_API]
    customer = await api.call(api.client.v1.customers.create_async, {"email": "a@example.com"})
    assert customer.id.startswith("cus_")
    sent = await stripe_emulator.requests("/v1/customers")
    assert sent[-1]["params"] == {"email": "a@example.com"} and sent[-1]["idempotency_key"]  # the library's own
    state = (await (await service.client.get("/functions/v1/stripe-webhook/health")).json())["stripe_api"]
    assert state["enabled"] and state["api_base"] == stripe_emulator.url and state["breaker"] == "closed"


@pytest.mark.parametrize("status, kind, code, answer", [
    (402, "card_error", "card_declined", (402, "card_error")),
    (400, "invalid_request_error", None, (400, "stripe_invalid_request")),
    (503, "api_error", None, (503, "stripe_unavailable")),
])
async def test_stripe_errors_become_clear_json_errors(start_service, stripe_emulator, status, kind, code, answer):
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0", STRIPE_NETWORK_RETRIES="0")
    api = service.app[STRIPE_API]
    await stripe_emulator.fail_next("/v1/customers", status, kind, "Your card was declined.", code=code,
                                    retry_after=3 if status == 503 else None)
    with pytest.raises((stripe.StripeError, StripeUnavailable)) as caught:
        await api.call(api.client.v1.customers.create_async, {"email": "a@example.com"})
    error = api_error(caught.value)
    assert (error.status, error.code) == answer
    if status == 402:
        assert error.message == "Your card was declined."
    if status == 503:
        assert error.headers["Retry-After"] == "3"


async def test_an_unreachable_stripe_opens_the_breaker_and_health_says_degraded(start_service):
    service = await start_service(STRIPE_SECRET_KEY="sk_test_" + "0" * 24, STRIPE_API_BASE="http://127.0.0.1:9",
                                  STRIPE_NETWORK_RETRIES="0", STRIPE_CATCHUP_SECONDS="0")
    api = service.app[STRIPE_API]
    for _ in range(5):
        with pytest.raises(StripeUnavailable, match="unreachable at http://127.0.0.1:9"):
            await api.call(api.client.v1.customers.list_async)
    with pytest.raises(StripeUnavailable, match="circuit breaker stripe:api is open") as caught:
        await api.call(api.client.v1.customers.list_async)
    assert 1 <= caught.value.retry_after <= 30 and api_error(caught.value).status == 503
    health = await (await service.client.get("/health")).json()
    assert health["status"] == "degraded" and health["circuit_breakers"]["stripe:api"]["state"] == "open"
