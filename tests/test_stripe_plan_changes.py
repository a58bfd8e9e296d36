"""update_subscription with a key (issue 16): asked of Stripe (the emulator), answered 202, and
vibe's state changes only when Stripe's webhook says so; without a Stripe subscription it stays
the manual, audited change."""

import tokens
from conftest import SECRET, wait_until
from stripe_support import USER, learner_in_stripe

PATH = "/functions/v1/user-management"


async def change(service, data, token=None):
    resp = await service.client.post(PATH, json={"action": "update_subscription", "data": data},
                                     headers=tokens.auth(token or tokens.admin_token("admin-1")))
    return resp.status, await resp.json()


async def subscribed(start_service, stripe_emulator):
    """A pro learner; vibe hears Stripe's webhooks."""
    await stripe_emulator.plan("price_expert_monthly", 4900, tier="expert", lookup_key="expert_monthly")
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0")
    await stripe_emulator.webhook_to(str(service.client.make_url("/functions/v1/stripe-webhook")), SECRET)
    customer, sub = await learner_in_stripe(stripe_emulator)

    async def tier(expected):
        async def reached():
            user = await service.user(USER)
            return user is not None and user["tier"] == expected
        return reached
    await wait_until(await tier("pro"))
    return service, sub, tier


async def test_a_plan_change_is_asked_of_stripe_and_applied_when_its_webhook_arrives(start_service, stripe_emulator):
    service, sub, tier = await subscribed(start_service, stripe_emulator)
    status, body = await change(service, {"user_id": USER, "tier": "expert", "reason": "upgrade on request"})
    assert status == 202, body
    assert body["accepted"] and body["subscription_id"] == sub["id"] and body["requested"] == {"tier": "expert"}
    assert (await service.user(USER))["tier"] == "pro"  # not ahead of Stripe
    [sent] = [r for r in await stripe_emulator.requests(f"/v1/subscriptions/{sub['id']}") if r["method"] == "POST"]
    assert sent["params"] == {"items": [{"id": sub["items"]["data"][0]["id"], "price": "price_expert_monthly"}],
                              "proration_behavior": "create_prorations"}
    await wait_until(await tier("expert"))
    audit = await service.db.fetchall("SELECT actor, old_tier, new_tier, reason FROM subscription_audit "
                                      "WHERE user_id = %s", (USER,))
    assert [(a["actor"], a["old_tier"], a["new_tier"]) for a in audit] == [("admin:admin-1", "pro", "expert")]
    assert audit[0]["reason"] == "asked Stripe (tier=expert): upgrade on request"

    # Cancel at the period's end, then resume: each asked of Stripe, each arriving as its event.
    status, body = await change(service, {"user_id": USER, "cancel_at_period_end": True, "reason": "leaving"},
                                tokens.service_token())
    assert status == 202 and body["requested"] == {"cancel_at_period_end": True}

    async def cancelling(value):
        async def reached():
            return bool((await service.user(USER))["cancel_at_period_end"]) is value
        return reached
    await wait_until(await cancelling(True))
    status, body = await change(service, {"user_id": USER, "cancel_at_period_end": False, "reason": "stays"})
    assert status == 202
    await wait_until(await cancelling(False))
    posts = [r["params"] for r in await stripe_emulator.requests(f"/v1/subscriptions/{sub['id']}")
             if r["method"] == "POST"]
    assert posts[1:] == [{"cancel_at_period_end": "true"}, {"cancel_at_period_end": "false"}]
    status, body = await change(service, {"user_id": USER, "cancel_at_period_end": False, "reason": "again"})
    assert status == 202 and not body["accepted"]  # nothing to ask: Stripe already has it


async def test_what_stripe_owns_cannot_be_set_by_hand(start_service, stripe_emulator):
    service, sub, _ = await subscribed(start_service, stripe_emulator)
    status, body = await change(service, {"user_id": USER, "tier": "pro", "status": "canceled", "reason": "x"})
    assert status == 400 and "Stripe's to set" in body["error"]["message"]
    status, body = await change(service, {"user_id": USER, "tier": "free", "reason": "x"})
    assert status == 400 and "cancel_at_period_end" in body["error"]["message"]
    await stripe_emulator.fail_next(f"/v1/subscriptions/{sub['id']}", 400, "invalid_request_error",
                                    "No such price: 'price_x'", param="items[0][price]")
    status, body = await change(service, {"user_id": USER, "price": "price_x", "reason": "x"})
    assert (status, body["error"]["code"]) == (400, "stripe_invalid_request")


async def test_without_a_stripe_subscription_it_stays_a_manual_change(start_service, stripe_emulator):
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="0")
    token = tokens.user_token("comp-user", email="comp@example.com")
    await service.client.post(PATH, json={"action": "create_profile"}, headers=tokens.auth(token))
    status, body = await change(service, {"user_id": "comp-user", "tier": "expert", "reason": "speaker"})
    assert status == 200 and body["tier"] == "expert" and body["changed"] == ["tier"]
    assert not await stripe_emulator.requests()
    status, body = await change(service, {"user_id": "comp-user", "reason": "no tier"})
    assert status == 400 and "tier" in body["error"]["message"]
