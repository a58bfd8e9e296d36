"""The platform's billing state, as the Stripe handlers in plugins/ change it.

Every function takes the handler's context and works inside its transaction. Each write is
keyed so that running it again (a duplicate delivery, a replay, a retry after a crash) changes
nothing and announces nothing a second time.
"""

from __future__ import annotations

import secrets
from typing import Any

from vibe.billing.domain import UserRecord
from vibe.billing.outcomes import WaitForCustomer
from vibe.config import TIERS, Settings
from vibe.db.rowwrites import KeyedTable, defer_update, defer_upsert
from vibe.plugins.context import DomainContext, StripeEventContext

GRANTING = ("active", "trialing", "past_due")  # statuses that keep the paid tier
# The tables handlers write a row of by its key, merged per batch on PostgreSQL (vibe.db.rowwrites).
PROFILES = KeyedTable("profiles", "id", doubles=frozenset({"created_at", "updated_at"}))
SUBSCRIPTIONS = KeyedTable("subscriptions", "id", doubles=frozenset({"updated_at"}))


class BillingError(Exception):
    """The event cannot be applied as it is (its data); it is retried, then dead."""


class ConfigurationNeeded(BillingError):
    """The event cannot be applied until the operator changes `setting` (and restarts).

    The dispatcher marks it `failed` with the reason and no next attempt: it is not retried on
    a timer and does not count toward STRIPE_MAX_ATTEMPTS; `events replay --failed` applies it
    once the setting is fixed.
    """

    def __init__(self, message: str, *, setting: str):
        super().__init__(message)
        self.setting = setting


def type_rank(event_type: str) -> int:
    """Lifecycle order of events of one object within the same second."""
    if event_type.endswith(".created"):
        return 0
    if event_type.endswith(".deleted"):
        return 2
    return 1


async def claim_version(ctx: StripeEventContext, object_id: str) -> bool:
    """Record this event as the newest for `object_id`; False when a newer one was applied.

    Order is (event `created`, lifecycle rank): `.created` < updates < `.deleted`. Two events
    of the same rank in the same second are applied in the order they are processed. One
    conditional upsert: it takes the row lock, so concurrent events of one object serialise.
    """
    rank = type_rank(ctx.event["type"])
    if ctx.batch is not None and (known := ctx.batch.claim(ctx, object_id, rank)) is not None:
        return known  # read with the dispatcher's batch (vibe/billing/batch.py)
    rows = await ctx.tx.fetchall(
        "INSERT INTO stripe_object_versions (object_id, event_created, event_rank, event_id) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (object_id) DO UPDATE SET "
        "event_created = excluded.event_created, event_rank = excluded.event_rank, event_id = excluded.event_id "
        "WHERE stripe_object_versions.event_created < excluded.event_created OR "
        "(stripe_object_versions.event_created = excluded.event_created AND "
        "stripe_object_versions.event_rank <= excluded.event_rank) RETURNING object_id",
        (object_id, ctx.created, rank, ctx.event_id),
    )
    if rows and ctx.batch is not None:
        ctx.batch.claimed(object_id, (ctx.created, rank))
    return bool(rows)


async def superseded(ctx: StripeEventContext, object_id: str) -> bool:
    """True when an event newer than this one, in `claim_version`'s order, was applied to
    `object_id` (an invoice event asking whether its subscription has moved on). Reads only."""
    row = await ctx.tx.fetchone(
        "SELECT event_created, event_rank FROM stripe_object_versions WHERE object_id = %s", (object_id,))
    return row is not None and (int(row["event_created"]), int(row["event_rank"])) > (
        ctx.created, type_rank(ctx.event["type"]))


def new_referral_code() -> str:
    return "VIBE" + secrets.token_hex(4).upper()


async def get_profile(tx, user_id: str) -> dict[str, Any] | None:
    return await tx.fetchone("SELECT * FROM profiles WHERE id = %s", (user_id,))


async def ensure_profile(ctx: DomainContext, user_id: str, *, email: str | None = None,
                         full_name: str | None = None) -> dict[str, Any]:
    """The user's profile, created (and announced with `user_created`, as a `UserRecord`) if it
    does not exist."""
    insert = ("INSERT INTO profiles (id, email, full_name, referral_code, created_at, updated_at) "
              "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING *")
    values = (user_id, email.lower() if email else None, full_name, new_referral_code(), ctx.now, ctx.now)
    if ctx.tx.dialect == "postgresql":
        # One round trip whether the profile exists or not: both parts of one statement see the
        # same snapshot, so the SELECT finds the row only when the INSERT found it there.
        rows = await ctx.tx.fetchall(
            f"WITH created AS ({insert}) SELECT TRUE AS is_new, * FROM created "
            "UNION ALL SELECT FALSE, * FROM profiles WHERE id = %s", (*values, user_id))
        profile = rows[0] if rows else None
        created = bool(profile and profile.pop("is_new"))
    else:  # local: the read, and the insert only when needed
        profile, created = await get_profile(ctx.tx, user_id), False
        if profile is None:
            rows = await ctx.tx.fetchall(insert, values)
            profile, created = (rows[0], True) if rows else (None, False)
    if created:
        ctx.profiles[user_id] = profile
        await ctx.announce("user_created", user=UserRecord.from_row(profile))
        return profile
    if profile is None:
        profile = await get_profile(ctx.tx, user_id)  # created concurrently, committed since
    ctx.profiles[user_id] = profile
    if email and not profile["email"]:
        await update_profile(ctx, user_id, {"email": email.lower()})
        profile["email"] = email.lower()
    return profile


async def update_profile(ctx: DomainContext, user_id: str, fields: dict[str, Any]) -> None:
    """Change profile columns and tell caches (`user_changed`)."""
    if not fields:
        return
    defer_update(ctx.tx, PROFILES, user_id, {**fields, "updated_at": ctx.now})
    if user_id in ctx.profiles:  # a new dict: a caller's copy keeps the values from before
        ctx.profiles[user_id] = {**ctx.profiles[user_id], **fields, "updated_at": ctx.now}
    await ctx.announce("user_changed", user_id=user_id, fields=sorted(fields))


async def user_by_email(tx, email: str | None) -> str | None:
    if not email:
        return None
    return await tx.fetchval(
        "SELECT id FROM profiles WHERE email = %s ORDER BY created_at LIMIT 1", (email.lower(),)
    )


async def link_customer(ctx: StripeEventContext, user_id: str, customer_id: str,
                        email: str | None = None) -> bool:
    """Link a Stripe customer to a user once (the events waiting for it are woken on commit)."""
    rows = await ctx.tx.fetchall(
        "INSERT INTO stripe_customers (customer_id, user_id, email, source_event_id, linked_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO NOTHING RETURNING customer_id",
        (customer_id, user_id, email, ctx.event_id, ctx.now),
    )
    if not rows:
        return False
    await update_profile(ctx, user_id, {"stripe_customer_id": customer_id})
    ctx.linked_customers.add(customer_id)  # the dispatcher wakes its waiting events after COMMIT
    await ctx.announce("customer_linked", user_id=user_id, customer_id=customer_id)
    return True


USER_ID_KEYS = ("user_id", "userId")  # vibe's name, and the platform's (camelCase)
REFERRAL_KEYS = ("referralCode", "referral_code")


def _meta_value(obj: Any, keys: tuple[str, ...]) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    for key in keys:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def metadata_user_id(*objects: Any) -> str | None:
    """The user the first of `objects` whose metadata names one names: `metadata.user_id` or the
    platform's `metadata.userId` (checkout sessions, customers, subscriptions, PaymentIntents,
    invoices and their subscription details)."""
    return next((uid for uid in (_meta_value(obj, USER_ID_KEYS) for obj in objects) if uid), None)


def metadata_referral_code(obj: Any) -> str | None:
    """The referrer's code a checkout session carries: `metadata.referralCode` (the platform's)
    or `metadata.referral_code`."""
    return _meta_value(obj, REFERRAL_KEYS)


async def resolve_user(ctx: StripeEventContext, customer_id: str | None, *,
                       user_id: str | None = None, email: str | None = None) -> dict[str, Any] | None:
    """The profile of the user an event is about: the customer's link; else the user id the
    event names, or a profile with the event's email (creating the profile and the link as
    needed); else None when there is no customer, or WaitForCustomer until a link arrives."""
    if customer_id:
        linked = ctx.batch.linked(ctx, customer_id) if ctx.batch is not None else None
        linked = linked or await ctx.tx.fetchone(
            "SELECT p.* FROM stripe_customers c JOIN profiles p ON p.id = c.user_id WHERE c.customer_id = %s",
            (customer_id,),
        )
        if linked:
            ctx.profiles[linked["id"]] = linked
            return linked
    user_id = user_id or await user_by_email(ctx.tx, email)
    if user_id:
        profile = await ensure_profile(ctx, user_id, email=email)
        if customer_id and await link_customer(ctx, user_id, customer_id, email):
            profile["stripe_customer_id"] = customer_id
        return profile
    if customer_id:
        raise WaitForCustomer(customer_id)
    return None


def tier_for_price(price: dict | None, settings: Settings) -> str:
    """A price's tier: `metadata.tier`, a lookup_key starting with a tier, or STRIPE_PRICE_TIERS."""
    price = price or {}
    tier = str((price.get("metadata") or {}).get("tier", "")).lower()
    if tier in TIERS:
        return tier
    lookup = str(price.get("lookup_key") or "").lower()
    for name in TIERS:
        if lookup == name or lookup.startswith((name + "_", name + "-")):
            return name
    product = price.get("product")
    product_id = product.get("id") if isinstance(product, dict) else product
    if isinstance(product, dict):
        tier = str((product.get("metadata") or {}).get("tier", "")).lower()
        if tier in TIERS:
            return tier
    for key in (price.get("id"), product_id):
        if key and key in settings.billing.price_tiers:
            return settings.billing.price_tiers[key]
    price_id = price.get("id")
    if not (price_id or product_id):  # no price at all: the event's data, not the configuration
        raise BillingError("no tier: the subscription names no price or product")
    named = [str((obj.get("metadata") or {}).get("tier")) for obj in (price, product)
             if isinstance(obj, dict) and (obj.get("metadata") or {}).get("tier")]
    unknown = f"; metadata.tier {named[0]!r} is not one of {', '.join(TIERS)}" if named else ""
    raise ConfigurationNeeded(
        f"no tier for price {price_id!r} (product {product_id!r}){unknown}: set "
        f"STRIPE_PRICE_TIERS={price_id or product_id}=TIER (TIER one of {', '.join(TIERS)}; several "
        "comma-separated), or the price's metadata.tier, or a lookup_key such as pro_monthly",
        setting="STRIPE_PRICE_TIERS",
    )


def first_item(subscription: dict) -> dict:
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}


def subscription_price(subscription: dict) -> dict:
    item = first_item(subscription)
    return item.get("price") or item.get("plan") or subscription.get("plan") or {}


def period_end(subscription: dict) -> int | None:
    """`current_period_end`: on the subscription (older API versions) or its first item (newer)."""
    value = subscription.get("current_period_end") or first_item(subscription).get("current_period_end")
    return int(value) if value else None


def invoice_subscription(invoice: dict) -> str | None:
    """An invoice's subscription: top-level (older API versions) or under `parent` (newer)."""
    sub = invoice.get("subscription")
    if not sub:
        sub = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    return sub or None


def invoice_payment_intent(invoice: dict) -> str | None:
    """An invoice's PaymentIntent: top-level (older API versions) or in `payments` (newer)."""
    pi = invoice.get("payment_intent")
    if not pi:
        for entry in (invoice.get("payments") or {}).get("data") or []:
            pi = (entry.get("payment") or {}).get("payment_intent")
            if pi:
                break
    if isinstance(pi, dict):
        pi = pi.get("id")
    return pi or None


def object_id(value: Any) -> str | None:
    """An expandable field: the id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) and value else None


SUBSCRIPTION_COLUMNS = ("user_id", "customer_id", "status", "tier", "price_id", "amount", "currency", "billing_interval",
                        "current_period_end", "cancel_at_period_end", "started_at", "ended_at")


def save_subscription(ctx: StripeEventContext, subscription_id: str, **row: Any) -> None:
    """Insert or replace a subscription's row (every column of SUBSCRIPTION_COLUMNS, by name),
    sent with the transaction's next statement."""
    defer_upsert(ctx.tx, SUBSCRIPTIONS, subscription_id, {**{c: row[c] for c in SUBSCRIPTION_COLUMNS}, "updated_at": ctx.now})


async def mark_past_due(ctx: StripeEventContext, subscription_id: str) -> int:
    """An active or trialing subscription's row becomes past due; how many rows changed (0 or 1)."""
    return await ctx.tx.execute(
        "UPDATE subscriptions SET status = 'past_due', updated_at = %s WHERE id = %s AND status IN ('active', 'trialing')",
        (ctx.now, subscription_id))


async def subscription_tier(tx, subscription_id: str) -> str | None:
    """The paid tier of a stored subscription, None for one vibe has not seen."""
    return await tx.fetchval("SELECT tier FROM subscriptions WHERE id = %s", (subscription_id,))
