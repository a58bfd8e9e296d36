"""Checkout and the billing portal (issue 16), through HTTP, against the emulator's fake of
Checkout Sessions and the portal: what vibe sends is what Stripe's API reference requires, the
customer is made once with metadata.userId, redirects stay on allowed hosts, and Stripe's errors
are clear JSON errors."""

import pytest
import tokens
from stripe_support import USER

from vibe.billing.keys import STRIPE_API

CHECKOUT = "/functions/v1/billing/checkout"
PORTAL = "/functions/v1/billing/portal"
PUBLIC = "https://app.vibe.example"
URLS = {"success_url": f"{PUBLIC}/welcome?session={{CHECKOUT_SESSION_ID}}", "cancel_url": f"{PUBLIC}/pricing"}


@pytest.fixture
async def shop(start_service, stripe_emulator):
    """The service with a key, a Pro price found by its lookup key, and a learner with a profile."""
    await stripe_emulator.plan("price_pro_monthly", 2900, tier="pro", lookup_key="pro_monthly")
    await stripe_emulator.plan("price_expert_yearly", 49000, tier="expert", lookup_key="expert_yearly",
                               interval="year")
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0", PUBLIC_URL=PUBLIC,
                                  CORS_ALLOWED_ORIGINS="https://www.vibe.example")
    token = tokens.user_token(USER, email="lena@example.com")
    resp = await service.client.post("/functions/v1/user-management", json={"action": "create_profile"},
                                     headers=tokens.auth(token))
    assert resp.status == 200, await resp.text()
    return service, token


async def post(service, path, body, token, **headers):
    resp = await service.client.post(path, json=body, headers={**tokens.auth(token), **headers})
    return resp.status, await resp.json(), resp.headers


async def test_checkout_makes_the_customer_once_and_a_session_as_stripe_documents(shop, stripe_emulator):
    service, token = shop
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", "referral_code": "VIBEABC123", **URLS}, token)
    assert status == 200, body
    assert body["id"].startswith("cs_test_") and body["url"].startswith("https://checkout.stripe.com/")
    [made] = await stripe_emulator.requests("/v1/customers")
    assert made["params"] == {"email": "lena@example.com", "name": "Test Learner", "metadata": {"userId": USER}}
    assert made["idempotency_key"] == f"vibe-customer-{USER}"
    customer = await service.db.fetchval("SELECT stripe_customer_id FROM profiles WHERE id = %s", (USER,))
    assert customer.startswith("cus_") and await service.db.fetchval(
        "SELECT user_id FROM stripe_customers WHERE customer_id = %s", (customer,)) == USER
    [sent] = await stripe_emulator.requests("/v1/checkout/sessions")
    meta = {"userId": USER, "referralCode": "VIBEABC123"}
    assert sent["params"] == {"mode": "subscription", "customer": customer, "client_reference_id": USER,
                              "line_items": [{"price": "price_pro_monthly", "quantity": "1"}],
                              "success_url": URLS["success_url"], "cancel_url": URLS["cancel_url"],
                              "metadata": meta, "subscription_data": {"metadata": meta}}
    assert sent["idempotency_key"].startswith(f"vibe-checkout-{USER}-")

    # The same request again (a double click) is the same session; the customer is not made twice.
    status, again, _ = await post(service, CHECKOUT, {"tier": "pro", "referral_code": "VIBEABC123", **URLS}, token)
    assert (status, again["id"]) == (200, body["id"])
    assert len(await stripe_emulator.requests("/v1/customers")) == 1
    # Another interval is another request, found by its lookup key; a caller's key is used.
    status, other, _ = await post(service, CHECKOUT, {"tier": "expert", "interval": "yearly", **URLS}, token,
                                  **{"Idempotency-Key": "click-2"})
    assert status == 200 and other["id"] != body["id"]
    sent = (await stripe_emulator.requests("/v1/checkout/sessions"))[-1]
    assert sent["params"]["line_items"][0]["price"] == "price_expert_yearly" and "referralCode" not in sent["params"]["metadata"]


async def test_prices_come_from_stripe_prices_first(start_service, stripe_emulator):
    await stripe_emulator.plan("price_pro_special", 1900, tier="pro")
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0", PUBLIC_URL=PUBLIC,
                                  STRIPE_PRICES="pro_monthly=price_pro_special")
    token = tokens.user_token(USER, email="lena@example.com")
    await service.client.post("/functions/v1/user-management", json={"action": "create_profile"},
                              headers=tokens.auth(token))
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", **URLS}, token)
    assert status == 200, body
    assert (await stripe_emulator.requests("/v1/checkout/sessions"))[-1]["params"]["line_items"][0]["price"] == \
        "price_pro_special"
    assert not await stripe_emulator.requests("/v1/prices")
    status, body, _ = await post(service, CHECKOUT, {"tier": "starter", **URLS}, token)
    assert (status, body["error"]["code"]) == (400, "unknown_price") and "STRIPE_PRICES=starter_monthly" in \
        body["error"]["message"]


@pytest.mark.parametrize("url", ["https://evil.example/phish", "javascript:alert(1)", "https://app.vibe.example@evil.example/",
                                 "http://www.vibe.example.evil.example/",
                                 # malformed hosts (urllib raises on them; found by schemathesis in CI)
                                 "https://4\U000ff4d0]", "https://[::1", "https://app.vibe.example:99999/"])
async def test_redirects_only_to_public_url_or_an_allowed_origin(shop, stripe_emulator, url):
    service, token = shop
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", **URLS, "cancel_url": url}, token)
    assert (status, body["error"]["code"]) == (400, "invalid_data"), body
    assert not await stripe_emulator.requests("/v1/checkout/sessions")  # refused before Stripe is asked
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", **URLS,
                                                     "cancel_url": "https://www.vibe.example/back"}, token)
    assert status == 200, body


async def test_a_subscribed_learner_gets_409_and_the_portal(shop, stripe_emulator):
    service, token = shop
    status, body, _ = await post(service, PORTAL, {"return_url": f"{PUBLIC}/account"}, token)
    assert (status, body["error"]["code"]) == (409, "no_customer")
    await post(service, CHECKOUT, {"tier": "pro", **URLS}, token)
    await service.db.execute("UPDATE profiles SET tier = 'pro', subscription_status = 'active' WHERE id = %s", (USER,))
    status, body, _ = await post(service, CHECKOUT, {"tier": "expert", **URLS}, token)
    assert (status, body["error"]["code"]) == (409, "already_subscribed")
    assert body["error"]["details"]["portal"] == PORTAL
    status, body, _ = await post(service, PORTAL, {"return_url": f"{PUBLIC}/account"}, token)
    assert status == 200 and body["url"].startswith("https://billing.stripe.com/")
    [sent] = await stripe_emulator.requests("/v1/billing_portal/sessions")
    customer = await service.db.fetchval("SELECT stripe_customer_id FROM profiles WHERE id = %s", (USER,))
    assert sent["params"] == {"customer": customer, "return_url": f"{PUBLIC}/account"} and sent["idempotency_key"]


async def test_stripe_errors_are_json_errors_never_500(shop, stripe_emulator):
    service, token = shop
    await stripe_emulator.fail_next("/v1/checkout/sessions", 402, "card_error", "Your card was declined.",
                                    code="card_declined")
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", **URLS}, token)
    assert (status, body["error"]["code"], body["error"]["message"]) == (402, "card_error", "Your card was declined.")
    status, body, _ = await post(service, CHECKOUT, {"price": "price_nope", **URLS}, token)
    assert (status, body["error"]["code"]) == (400, "stripe_invalid_request") and "price_nope" in body["error"]["message"]
    # A 503 is retried by the library with the same idempotency key; still failing, it is ours.
    await stripe_emulator.fail_next("/v1/checkout/sessions", 503, "api_error", "Stripe is down", retry_after=9,
                                    times=3)
    status, body, headers = await post(service, CHECKOUT, {"tier": "pro", **URLS}, token,
                                       **{"Idempotency-Key": "after-outage"})
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "stripe_unavailable", "9")
    tries = (await stripe_emulator.requests("/v1/checkout/sessions"))[-3:]
    assert len({t["idempotency_key"] for t in tries}) == 1  # STRIPE_NETWORK_RETRIES=2: three tries, one key
    assert service.app[STRIPE_API].breaker.state == "closed"  # one failed call does not open it


async def test_without_a_key_checkout_and_portal_are_off(service):
    token = tokens.user_token(USER, email="lena@example.com")
    await service.client.post("/functions/v1/user-management", json={"action": "create_profile"},
                              headers=tokens.auth(token))
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", "success_url": "http://127.0.0.1:8080/ok",
                                                     "cancel_url": "http://127.0.0.1:8080/no"}, token)
    assert (status, body["error"]["code"]) == (503, "billing_disabled")
    assert "STRIPE_SECRET_KEY is not set" in body["error"]["message"]
    status, body, _ = await post(service, CHECKOUT, {"tier": "pro", **URLS}, None)
    assert status == 401
