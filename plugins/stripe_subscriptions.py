"""customer.subscription.created/updated/deleted: the user's tier and subscription state."""

from vibe.api import (
    GRANTING,
    EventStale,
    SubscriptionChange,
    claim_version,
    hookimpl,
    metadata_user_id,
    object_id,
    period_end,
    resolve_user,
    save_subscription,
    subscription_price,
    tier_for_price,
    update_profile,
)

ENDED = ("canceled", "unpaid", "incomplete_expired")


async def subscription_event(ctx):
    sub = ctx.obj
    if not await claim_version(ctx, sub["id"]):
        raise EventStale("a newer event for this subscription was already applied")
    customer_id = object_id(sub.get("customer"))
    profile = await resolve_user(ctx, customer_id, user_id=metadata_user_id(sub))
    user_id = profile["id"]
    deleted = ctx.event["type"] == "customer.subscription.deleted"
    status = "canceled" if deleted else sub.get("status") or "incomplete"
    price = subscription_price(sub)
    paid_tier = tier_for_price(price, ctx.settings)
    tier = paid_tier if status in GRANTING else "free"
    ends = period_end(sub)
    cancel = bool(sub.get("cancel_at_period_end"))
    amount, currency = price.get("unit_amount") or price.get("amount"), price.get("currency")
    save_subscription(
        ctx, sub["id"], user_id=user_id, customer_id=customer_id, status=status, tier=paid_tier,
        price_id=price.get("id"), amount=amount, currency=currency,
        billing_interval=(price.get("recurring") or {}).get("interval") or price.get("interval"),
        current_period_end=ends, cancel_at_period_end=cancel, started_at=sub.get("start_date"),
        ended_at=sub.get("ended_at"))
    if status in ENDED and profile["stripe_subscription_id"] not in (None, sub["id"]):
        return f"subscription {sub['id']} ended; user {user_id} is on another subscription"
    fields = {"tier": tier, "subscription_status": status, "current_period_end": ends,
              "cancel_at_period_end": cancel, "stripe_subscription_id": sub["id"]}
    changed = {k: v for k, v in fields.items() if profile[k] != v and not (k == "cancel_at_period_end" and bool(profile[k]) == v)}
    if changed:
        await update_profile(ctx, user_id, changed)
        await ctx.announce("subscription_changed", user_id=user_id, change=SubscriptionChange(
            subscription_id=sub["id"], old_tier=profile["tier"], tier=tier, status=status,
            old_status=profile["subscription_status"], current_period_end=ends,
            cancel_at_period_end=cancel, amount=amount, currency=currency,
            source="stripe", event_id=ctx.event_id,
        ))
    return f"user {user_id}: {tier} ({status})"


@hookimpl
def register_stripe_handlers():
    return {
        "customer.subscription.created": subscription_event,
        "customer.subscription.updated": subscription_event,
        "customer.subscription.deleted": subscription_event,
    }
