"""Plan changes in Stripe: what `update_subscription` does when STRIPE_SECRET_KEY is set.

The learner's Stripe subscription is changed in Stripe (a price swap with
`STRIPE_PRORATION_BEHAVIOR`, cancel at period end, resume), and nothing else: vibe's own state
changes when Stripe's `customer.subscription.updated` arrives (or a catch-up finds it), never
ahead of Stripe. The request is written to `subscription_audit` (who, why, what was asked).
A user with no Stripe subscription, or the `admin` tier, stays a manual change.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from vibe.billing.checkout import call_stripe, price_for
from vibe.billing.keys import STRIPE_API
from vibe.billing.state import first_item, subscription_price
from vibe.keys import DB, SETTINGS
from vibe.web.validation import invalid

MANUAL_TIERS = ("admin",)


def in_stripe(app: web.Application, profile: dict[str, Any], change: dict[str, Any]) -> bool:
    """Is this change one for Stripe (a key, a Stripe subscription, a tier Stripe sells)?"""
    return STRIPE_API in app and bool(profile.get("stripe_subscription_id")) and \
        change.get("tier") not in MANUAL_TIERS


async def change_in_stripe(app: web.Application, actor: str, profile: dict[str, Any],
                           change: dict[str, Any]) -> dict[str, Any]:
    """Ask Stripe for the change; the answer for 202 (accepted, applied when Stripe says so)."""
    api, settings = app[STRIPE_API], app[SETTINGS]
    if change.get("status") is not None or change.get("current_period_end") is not None:
        raise invalid("data.status", "is Stripe's to set while the user has a Stripe subscription; change the "
                                     "plan (tier) or cancel_at_period_end")
    if change.get("tier") == "free":
        raise invalid("data.tier", "free: cancel in Stripe with cancel_at_period_end true (the tier follows "
                                   "when the subscription ends)")
    sub_id = profile["stripe_subscription_id"]
    sub = await call_stripe(api, api.client.v1.subscriptions.retrieve_async, sub_id)
    current = sub.last_response.data if sub.last_response else sub.to_dict()
    params: dict[str, Any] = {}
    if change.get("tier") or change.get("price"):
        price = await price_for(api, settings, {k: change.get(k) for k in ("tier", "price", "interval")})
        if price != subscription_price(current).get("id"):
            params["items"] = [{"id": first_item(current)["id"], "price": price}]
            params["proration_behavior"] = settings.billing.proration_behavior
    if "cancel_at_period_end" in change and bool(change["cancel_at_period_end"]) != bool(
            current.get("cancel_at_period_end")):
        params["cancel_at_period_end"] = bool(change["cancel_at_period_end"])
    if not params:
        return {"user_id": profile["id"], "subscription_id": sub_id, "requested": {}, "accepted": False,
                "note": "Stripe's subscription already is what was asked"}
    await call_stripe(api, api.client.v1.subscriptions.update_async, sub_id, params)
    requested = {k: change[k] for k in ("tier", "price", "interval", "cancel_at_period_end") if k in change}
    await app[DB].execute(
        "INSERT INTO subscription_audit (user_id, actor, old_tier, new_tier, old_status, new_status, reason, "
        "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (profile["id"], actor, profile["tier"], change.get("tier") or profile["tier"], profile["subscription_status"],
         profile["subscription_status"], f"asked Stripe ({', '.join(f'{k}={v}' for k, v in requested.items())}): "
                                         f"{change['reason']}", time.time()))
    return {"user_id": profile["id"], "subscription_id": sub_id, "requested": requested, "accepted": True,
            "note": "Stripe was asked; vibe's state changes when Stripe's customer.subscription.updated arrives"}
