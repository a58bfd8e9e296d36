"""customer.subscription.created/updated/deleted: the user's tier and subscription state."""

from vibe.billing import state as billing
from vibe.billing.outcomes import EventStale
from vibe.plugins.hookspecs import hookimpl

ENDED = ("canceled", "unpaid", "incomplete_expired")


async def subscription_event(ctx):
    sub = ctx.obj
    if not await billing.claim_version(ctx, sub["id"]):
        raise EventStale("a newer event for this subscription was already applied")
    customer_id = billing.object_id(sub.get("customer"))
    profile = await billing.resolve_user(ctx, customer_id, user_id=(sub.get("metadata") or {}).get("user_id"))
    user_id = profile["id"]
    deleted = ctx.event["type"] == "customer.subscription.deleted"
    status = "canceled" if deleted else sub.get("status") or "incomplete"
    price = billing.subscription_price(sub)
    paid_tier = billing.tier_for_price(price, ctx.settings)
    tier = paid_tier if status in billing.GRANTING else "free"
    period_end = billing.period_end(sub)
    cancel = bool(sub.get("cancel_at_period_end"))
    values = (user_id, customer_id, status, paid_tier, price.get("id"), price.get("unit_amount") or price.get("amount"),
              price.get("currency"), (price.get("recurring") or {}).get("interval") or price.get("interval"),
              period_end, cancel, sub.get("start_date"), sub.get("ended_at"), ctx.now)
    ctx.tx.defer(
        "INSERT INTO subscriptions (user_id, customer_id, status, tier, price_id, amount, currency, "
        "billing_interval, current_period_end, cancel_at_period_end, started_at, ended_at, updated_at, id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "user_id = excluded.user_id, customer_id = excluded.customer_id, status = excluded.status, "
        "tier = excluded.tier, price_id = excluded.price_id, amount = excluded.amount, currency = excluded.currency, "
        "billing_interval = excluded.billing_interval, current_period_end = excluded.current_period_end, "
        "cancel_at_period_end = excluded.cancel_at_period_end, started_at = excluded.started_at, "
        "ended_at = excluded.ended_at, updated_at = excluded.updated_at",
        (*values, sub["id"]),
    )
    if status in ENDED and profile["stripe_subscription_id"] not in (None, sub["id"]):
        return f"subscription {sub['id']} ended; user {user_id} is on another subscription"
    fields = {"tier": tier, "subscription_status": status, "current_period_end": period_end,
              "cancel_at_period_end": cancel, "stripe_subscription_id": sub["id"]}
    changed = {k: v for k, v in fields.items() if profile[k] != v and not (k == "cancel_at_period_end" and bool(profile[k]) == v)}
    if changed:
        await billing.update_profile(ctx, user_id, changed)
        await ctx.announce("subscription_changed", user_id=user_id, change={
            "subscription_id": sub["id"], "old_tier": profile["tier"], "tier": tier, "status": status,
            "old_status": profile["subscription_status"], "current_period_end": period_end,
            "cancel_at_period_end": cancel, "amount": values[5], "currency": values[6],
            "source": "stripe", "event_id": ctx.event_id,
        })
    return f"user {user_id}: {tier} ({status})"


@hookimpl
def register_stripe_handlers():
    return {
        "customer.subscription.created": subscription_event,
        "customer.subscription.updated": subscription_event,
        "customer.subscription.deleted": subscription_event,
    }
