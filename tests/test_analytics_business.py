"""Revenue and subscription events from the Stripe pipeline, and the business figures."""

import json

import tokens
from analytics_support import WRITE_KEY, at, get, iso_at, post, stored
from conftest import postgres_only, wait_until
from stripe_support import fixture

from vibe.analytics.keys import ANALYTICS
from vibe.analytics.queries import refresh_business_views


async def test_stripe_payments_and_subscription_changes_become_revenue_events(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    created = fixture("customer.subscription.created", at(2, 12), metadata={"user_id": "payer"})
    paid = fixture("invoice.payment_succeeded", at(2, 12, 1), subscription=created["data"]["object"]["id"])
    await service.deliver(created, paid)
    await service.deliver(paid)  # a redelivery records nothing twice
    rows = await stored(service, user_id="payer")
    assert [(r["event"], json.loads(r["properties"])["action"], r["ts"], r["source"]) for r in rows] == [
        ("subscription_event", "subscribed", at(2, 12), "billing"),
        ("subscription_event", "payment", at(2, 12, 1), "billing")]
    assert json.loads(rows[0]["properties"])["tier"] == "pro"
    # A server can relay an off-Stripe payment too; lifecycle actions are not revenue.
    await post(service, "subscription-event", {"batch": [
        {"user_id": "p2", "properties": {"action": "payment", "tier": "starter", "amount": 500, "currency": "EUR"},
         "timestamp": at(2, 1)},
        {"user_id": "p2", "properties": {"action": "renewed", "tier": "starter", "amount": 500, "currency": "EUR"},
         "timestamp": at(2, 1)}]})
    revenue = await get(service, "aggregates/revenue", **{"from": at(2), "to": at(3)})
    assert revenue["rows"] == [
        {"day": iso_at(2), "tier": "pro", "currency": "usd", "amount": 2000, "payments": 1},
        {"day": iso_at(2), "tier": "starter", "currency": "eur", "amount": 500, "payments": 1}]
    journey = await get(service, "journey/payer")
    assert [e["properties"]["action"] for s in journey["sessions"] for e in s["events"]] == ["subscribed", "payment"]


async def seed_billing(db):
    profiles = [("p1", at(0), None), ("p2", at(0), None), ("p3", at(1), "p1"), ("p4", at(1), None),
                ("p5", at(1), None)]
    for pid, created, referred_by in profiles:
        await db.execute("INSERT INTO profiles (id, email, referred_by, created_at, updated_at) "
                         "VALUES (%s, %s, %s, %s, %s)", (pid, f"{pid}@example.com", referred_by, created, created))
    subscriptions = [("s1", "p1", "active", "pro", 1500, "usd", "month", at(0, 12), None),
                     ("s2", "p2", "active", "expert", 12000, "usd", "year", at(1, 1), None),
                     ("s3", "p3", "canceled", "starter", 900, "usd", "month", at(1, 2), at(2, 3)),
                     ("s4", "p4", "trialing", "pro", 1500, "eur", "month", at(2, 4), None)]
    for row in subscriptions:
        await db.execute("INSERT INTO subscriptions (id, user_id, status, tier, amount, currency, billing_interval, "
                         "started_at, ended_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)", row)
    payments = [("k1", "p1", "succeeded", 1500, "usd", at(0, 12)), ("k2", "p2", "succeeded", 12000, "usd", at(1, 1)),
                ("k3", "p3", "succeeded", 900, "usd", at(1, 2)), ("k4", "p3", "succeeded", 900, "usd", at(2, 2)),
                ("k5", "p4", "failed", 1500, "eur", at(2, 4))]
    for key, user, status, amount, currency, created in payments:
        await db.execute("INSERT INTO payments (dedupe_key, user_id, status, kind, amount, currency, source_event_id, "
                         "created, recorded_at) VALUES (%s, %s, %s, 'invoice', %s, %s, 'evt', %s, 0)",
                         (key, user, status, amount, currency, int(created)))


async def test_business_figures_against_hand_computed_answers(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    await seed_billing(service.db)
    await refresh_business_views(service.db)  # PostgreSQL: what the schedule does; SQLite: nothing to do
    first = await get(service, "business", **{"from": at(0), "to": at(2)})
    assert first == {
        "from": iso_at(0), "to": iso_at(2),
        "mrr": [{"currency": "eur", "amount": 1500}, {"currency": "usd", "amount": 2500}],
        "active_subscribers": {"expert": 1, "pro": 2},
        "new_subscribers": 3, "churned_subscribers": 0,
        "revenue": [{"currency": "usd", "amount": 14400, "payments": 3}],
        "arpu": [{"currency": "usd", "amount": 2880.0}],
        "users": 5,
        "conversion": {"signups": 5, "converted": 4, "rate": 0.8},
        "referral_revenue": [{"currency": "usd", "amount": 900}],
    }
    later = await get(service, "business", **{"from": at(2), "to": at(3)})
    assert (later["new_subscribers"], later["churned_subscribers"]) == (1, 1)
    assert later["revenue"] == [{"currency": "usd", "amount": 900, "payments": 1}]
    assert later["referral_revenue"] == [{"currency": "usd", "amount": 900}]
    assert later["conversion"] == {"signups": 0, "converted": 0, "rate": 0.0}


async def test_without_the_plugin_that_keeps_an_aggregate_it_says_unavailable_and_core_figures_stay(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, VIBE_DISABLE_PLUGINS="analytics_subscriptions")
    await seed_billing(service.db)
    await refresh_business_views(service.db)
    answer = await get(service, "aggregates/revenue", status=404, **{"from": at(0), "to": at(2)})
    assert answer["error"]["code"] == "aggregate_unavailable"
    assert (await get(service, "aggregates/pages", **{"from": at(0), "to": at(2)}))["rows"] == []  # still kept
    business = await get(service, "business", **{"from": at(0), "to": at(2)})  # from core tables only
    assert business["mrr"] == [{"currency": "eur", "amount": 1500}, {"currency": "usd", "amount": 2500}]
    assert business["revenue"] == [{"currency": "usd", "amount": 14400, "payments": 3}]


@postgres_only
async def test_business_views_refresh_on_a_schedule(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, ANALYTICS_REFRESH_SECONDS="1")
    span = {"from": at(0), "to": at(2)}
    assert (await get(service, "business", **span))["revenue"] == []  # cached until the next refresh
    await seed_billing(service.db)

    async def refreshed():
        return (await get(service, "business", **span))["revenue"] != []

    await wait_until(refreshed, timeout=10)


async def test_answers_are_cached_until_a_write_refresh_or_erasure(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    generations = service.app[ANALYTICS].generations
    if service.db.dialect == "postgresql":  # the schedule refreshes the views once at start-up

        async def refreshed_once():
            return generations["business"] >= 1

        await wait_until(refreshed_once)
    span = {"from": at(0), "to": at(2)}
    assert (await get(service, "business", **span))["users"] == 0
    await seed_billing(service.db)  # billing rows change behind the cache's back
    await refresh_business_views(service.db)
    assert (await get(service, "business", **span))["users"] == 0  # served from the cache
    resp = await service.client.delete("/functions/v1/analytics-tracking/users/nobody",
                                       headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 200  # an erasure drops every cached analytics answer at once
    assert (await get(service, "business", **span))["users"] == 5
