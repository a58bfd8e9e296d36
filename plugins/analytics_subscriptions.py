"""Analytics endpoint `subscription-event` (servers only), revenue per day and tier, and the
revenue and subscription events the billing pipeline's hooks record in their own transaction.
The original's `subscription_<event_type>` events are this endpoint's too (vibe.analytics.contract)."""

import uuid

from vibe.api import (
    GRANTING,
    TIERS,
    AnalyticsEndpoint,
    Event,
    EventInvalid,
    Field,
    choice_field,
    day,
    hookimpl,
    number_field,
    store_events,
    subscription_tier,
    upsert_sum,
)

ACTIONS = ("subscribed", "upgraded", "downgraded", "renewed", "canceled", "reactivated", "updated", "payment")
REVENUE = "payment"  # the action that is money received; the others describe the lifecycle


PROPERTIES = {  # tier, amount and currency: required for revenue (a payment with an amount)
    "action": choice_field(ACTIONS, required=True), "tier": choice_field(TIERS),
    "amount": number_field(minimum=0, integer=True, description="in the smallest currency unit"),
    "currency": Field("str", nullable=True, pattern="[A-Za-z]{3}", strip=False,
                      message="must be a three-letter ISO 4217 code"),
}


def is_revenue(props):
    return props["action"] == REVENUE and (props.get("amount") or 0) > 0


def subscription_properties(props):
    for field in ("tier", "currency") if is_revenue(props) else ():
        if props.get(field) is None:
            raise EventInvalid(f"properties.{field}", f"properties.{field} is required for a payment")
    return {**props, "currency": props["currency"].lower()} if props.get("currency") else props


async def sum_revenue(tx, events):
    sums: dict = {}
    for e in events:
        if is_revenue(e.properties):
            key = (day(e.ts), e.properties["tier"], e.properties["currency"])
            amount, payments = sums.get(key, (0, 0))
            sums[key] = (amount + int(e.properties["amount"]), payments + 1)
    if sums:
        await upsert_sum(tx, "analytics_revenue", ("day", "tier", "currency"), ("amount", "payments"), sums)


ENDPOINT = AnalyticsEndpoint(
    "subscription-event", subscription_properties, event="subscription_event", senders=frozenset({"server"}),
    properties=PROPERTIES, other_names=r"subscription_[A-Za-z0-9_.-]{1,80}",  # the original's subscription_<kind>
    rollup=sum_revenue, aggregate="revenue",
    description="A subscription action, tier, amount (smallest unit) and currency.",
)


@hookimpl
def register_analytics_endpoints():
    return ENDPOINT


def action_of(change):
    old, new = change.old_tier or "free", change.tier or "free"
    if old == new:
        return "reactivated" if change.old_status in ("canceled", None) and new != "free" else "updated"
    if old == "free":
        return "subscribed"
    if new == "free":
        return "canceled"
    return "upgraded" if TIERS.index(new) > TIERS.index(old) else "downgraded"


async def _store(tx, events):
    await store_events(tx, events, {ENDPOINT.name: ENDPOINT})


async def record(ctx, message_id, user_id, ts, properties, anonymous_id=None):
    """Store one billing event (and its rollups) in the caller's transaction: gathered, and
    written with the others of the transaction in one multi-row insert before it commits."""
    event = Event(message_id=message_id, endpoint=ENDPOINT.name, event=ENDPOINT.event, user_id=user_id,
                  anonymous_id=None if user_id else anonymous_id or "billing", session_id=None, ts=ts,
                  received_at=ctx.now, sent_at=None, properties=properties,
                  context={"source": "billing"}, is_bot=False, source="billing")
    ctx.tx.collect(_store).append(event)


@hookimpl
async def subscription_changed(ctx, user_id, change):
    when = float(getattr(ctx, "created", ctx.now))  # the Stripe event's time when a Stripe event caused it
    cause = change.event_id or uuid.uuid4().hex  # an admin's change has no Stripe event
    await record(ctx, f"subscription:{cause}:{change.subscription_id}", user_id, when, {
        "action": action_of(change), "tier": change.tier or "free", "old_tier": change.old_tier,
        "status": change.status, "old_status": change.old_status,
        "amount": int(change.amount or 0), "currency": (change.currency or "").lower(),
        "subscription_id": change.subscription_id,
    })


@hookimpl
async def payment_succeeded(ctx, payment):
    tier = None
    payer = await ctx.profile(payment.user_id) if payment.user_id else None
    if payer and payer["stripe_subscription_id"] == payment.subscription_id \
            and payer["subscription_status"] in GRANTING:
        tier = payer["tier"]  # the payer is on this subscription's paid tier
    elif payment.subscription_id:
        tier = await subscription_tier(ctx.tx, payment.subscription_id)
    if tier is None and payer:
        tier = payer["tier"]
    await record(ctx, f"payment:{payment.id}", payment.user_id, float(payment.created), {
        "action": REVENUE, "tier": tier or "free", "amount": int(payment.amount),
        "currency": payment.currency, "kind": payment.kind, "payment_id": payment.id,
    }, anonymous_id=payment.customer_id)
