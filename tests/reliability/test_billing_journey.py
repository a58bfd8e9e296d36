"""The learner's billing journey against the Stripe emulator (issue 16), through HTTP and the CLI:
sign up, checkout (the fake's hosted page), the subscription made in the emulator, tier pro; a
plan change through update_subscription, Stripe's webhook, tier expert; the webhook endpoint
gone, a cancellation in the emulator, catch-up, tier free. Each Stripe event applied once."""

import asyncio
import json

import pytest
import tokens
from conftest import SECRET, run_cli, wait_until

pytestmark = pytest.mark.reliability

LEARNER = "5f8c1e2a-9b7d-4c3e-8a1f-6d2b9e0c4a71"
APP = "https://app.vibe.example"


async def test_sign_up_pay_upgrade_cancel_unheard_and_catch_up(start_service, stripe_emulator, env):
    await stripe_emulator.plan("price_pro_monthly", 2900, tier="pro", lookup_key="pro_monthly")
    await stripe_emulator.plan("price_expert_monthly", 4900, tier="expert", lookup_key="expert_monthly")
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0", PUBLIC_URL=APP)
    await stripe_emulator.webhook_to(str(service.client.make_url("/functions/v1/stripe-webhook")), SECRET)

    async def tier_is(expected):
        async def reached():
            user = await service.user(LEARNER)
            return user is not None and user["tier"] == expected
        await wait_until(reached, timeout=15)
        return await service.user(LEARNER)

    # Sign up, then checkout: vibe answers the hosted page's address; the learner pays there.
    learner = tokens.auth(tokens.user_token(LEARNER, email="lena@example.com"))
    resp = await service.client.post("/functions/v1/user-management", json={"action": "create_profile"},
                                     headers=learner)
    assert resp.status == 200
    resp = await service.client.post("/functions/v1/billing/checkout", headers=learner, json={
        "tier": "pro", "success_url": f"{APP}/welcome", "cancel_url": f"{APP}/pricing"})
    session = await resp.json()
    assert resp.status == 200 and session["url"].startswith("https://checkout.stripe.com/")
    paid = await stripe_emulator.complete_checkout(session["id"])
    sub_id = paid["subscription"]["id"]
    user = await tier_is("pro")
    assert (user["subscription_status"], user["stripe_subscription_id"]) == ("active", sub_id)

    # A plan change through update_subscription: asked of Stripe, applied from its webhook.
    resp = await service.client.post("/functions/v1/user-management", headers=tokens.auth(tokens.admin_token("ops")),
                                     json={"action": "update_subscription",
                                           "data": {"user_id": LEARNER, "tier": "expert", "reason": "upgrade"}})
    assert resp.status == 202, await resp.text()
    await tier_is("expert")

    # The endpoint is gone (unregistered) when the learner cancels in Stripe: nothing arrives...
    await stripe_emulator.no_webhook()
    await stripe_emulator.api("DELETE", f"/v1/subscriptions/{sub_id}")
    await asyncio.sleep(1.5)  # localstripe would have sent its webhook by now
    await service.settle()
    assert (await service.user(LEARNER))["tier"] == "expert"
    # ... until catch-up lists what was missed.
    cli_env = {**env, **stripe_emulator.env}
    code, out, err = await run_cli("stripe", "catch-up", "--json", env=cli_env)
    assert code == 0, err
    result = json.loads(out)
    assert result["new"] == 1 and result["had"] == result["listed"] - 1
    user = await tier_is("free")
    assert user["subscription_status"] == "canceled"
    rows = await service.db.fetchall("SELECT type, source, status FROM stripe_events WHERE type = %s",
                                     ("customer.subscription.deleted",))
    assert [(r["source"], r["status"]) for r in rows] == [("api", "processed")]
    # Each event once: one payment for the one paid invoice, one row per event id.
    assert await service.db.fetchval("SELECT COUNT(*) FROM payments WHERE user_id = %s AND status = 'succeeded'",
                                     (LEARNER,)) == 1
    code, out, _ = await run_cli("stripe", "reconcile", env=cli_env)
    assert code == 0 and "no drift" in out, out
