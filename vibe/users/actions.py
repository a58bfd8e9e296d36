"""The profile actions of `POST /functions/v1/user-management` (the router is vibe/users/service.py).

Each takes the app, the caller's session and the request's `data`, and returns the answer's
JSON. Roles were checked by the router before this code runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from vibe.billing import plans
from vibe.billing import state as billing
from vibe.billing.domain import SubscriptionChange, UserRecord
from vibe.db.database import DatabaseUnavailable
from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.plugins.context import DomainContext
from vibe.users.cache_sync import evict_user
from vibe.users.sessions import (
    NOTIFICATION_KEYS,
    Session,
    load_profile,
    normalise,
    public_profile,
)
from vibe.web.errors import ApiError
from vibe.web.times import all_iso
from vibe.web.validation import Field, Problems, Shape, invalid

log = logging.getLogger(__name__)

LOCALE = r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*"
URL = r"https://[^\s]{1,2040}"
EDITABLE = {
    "display_name": Field("str", nullable=True, max_length=80),
    "full_name": Field("str", nullable=True, max_length=200),
    "avatar_url": Field("str", nullable=True, max_length=2048, pattern=URL),
    "locale": Field("str", nullable=True, max_length=35, pattern=LOCALE),
    "marketing_consent": Field("bool"),
}
REFUSED = {name: "may not be changed with update_profile" for name in (
    "id", "email", "role", "tier", "subscription_status", "current_period_end", "cancel_at_period_end",
    "stripe_customer_id", "stripe_subscription_id", "referral_code", "referred_by", "needs_review",
    "created_at", "updated_at")}
# The platform's per-kind mail switches (sessions.NOTIFICATION_KEYS): false means no such mail.
PREFERENCES = Field("object", shape=Shape({key: Field("bool") for key in NOTIFICATION_KEYS},
                                          unknown=f"is not a notification preference ({', '.join(NOTIFICATION_KEYS)})"),
                    description="kinds of mail to switch off (false) or on (true); merged with what is stored")
PERIOD_END = Field("time", nullable=True, minimum=0, maximum=2**40)
SUBSCRIPTION_TIERS = ("free", "starter", "pro", "expert", "admin")
SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due", "canceled", "unpaid", "incomplete")
SUBSCRIPTION = {
    "user_id": Field("str", required=True, max_length=128),
    "tier": Field("str", choices=SUBSCRIPTION_TIERS, description="the tier; required, unless only "
                  "cancel_at_period_end changes a Stripe subscription"),
    "status": Field("str", nullable=True, choices=SUBSCRIPTION_STATUSES),
    "current_period_end": PERIOD_END,
    "reason": Field("str", required=True, max_length=500, pattern=r"\S.*"),
}
STRIPE_CHANGE = {  # with STRIPE_SECRET_KEY and a Stripe subscription: asked of Stripe (docs/billing.md)
    "interval": Field("str", choices=("monthly", "yearly"), description="with tier: the price's interval"),
    "price": Field("str", pattern=r"price_[A-Za-z0-9_]{1,200}", description="a Stripe price instead of tier"),
    "cancel_at_period_end": Field("bool", description="true: cancel at the period's end; false: resume"),
}
# The `data` of each action (vibe.users.service.ACTIONS pairs them with their action).
CREATE = Shape({**{k: v for k, v in EDITABLE.items() if k != "full_name"},
                "referral_code": Field("str", nullable=True, max_length=64)})
UPDATE = Shape({**EDITABLE, "notification_preferences": PREFERENCES}, refused=REFUSED, at_least_one=True)
CHANGE_SUBSCRIPTION = Shape({**SUBSCRIPTION, **STRIPE_CHANGE}, any_of=("tier", "price", "cancel_at_period_end"))
READ = Shape({"user_id": Field("str", max_length=128, description="whose profile (default: the caller's; "
                                                                  "required for the service role)")})


def _context(app: web.Application, tx) -> DomainContext:
    return DomainContext(tx=tx, settings=app[SETTINGS], pm=app[PLUGINS])


async def create_profile(app: web.Application, session: Session, data: Any) -> dict[str, Any]:
    clean = CREATE.check(data)
    principal = session.principal
    user_id = principal.user_id
    code = clean.pop("referral_code", None)
    async with app[DB].transaction() as tx:
        existing = await billing.get_profile(tx, user_id)
        if existing is not None:
            return {"created": False, "profile": public_profile(normalise(existing))}
        referrer = None
        if code:
            referrer = await tx.fetchval("SELECT id FROM profiles WHERE referral_code = %s", (code.upper(),))
            if referrer is None or referrer == user_id:
                problem = "is your own code" if referrer == user_id else "matches no referrer"
                raise invalid("data.referral_code", problem)
        meta = principal.claims.get("user_metadata") or {}
        full_name = meta.get("full_name") or meta.get("name") if isinstance(meta, dict) else None
        ctx = _context(app, tx)
        email = principal.email.lower() if isinstance(principal.email, str) and principal.email else None
        fields = {"email": email,
                  "full_name": full_name if isinstance(full_name, str) else None, "referred_by": referrer,
                  "marketing_consent": False, **clean}
        rows = await tx.fetchall(
            f"INSERT INTO profiles (id, referral_code, created_at, updated_at, {', '.join(fields)}) VALUES "
            f"(%s, %s, %s, %s{', %s' * len(fields)}) ON CONFLICT (id) DO NOTHING RETURNING id",
            (user_id, billing.new_referral_code(), ctx.now, ctx.now, *fields.values()))
        profile = normalise(await billing.get_profile(tx, user_id))
        if rows:
            await ctx.announce("user_created", user=UserRecord.from_row(profile))
    evict_user(app, user_id)
    return {"created": bool(rows), "profile": public_profile(profile)}


async def update_profile(app: web.Application, session: Session, data: Any) -> dict[str, Any]:
    clean = UPDATE.check(data)
    user_id = session.principal.user_id
    async with app[DB].transaction() as tx:
        profile = await billing.get_profile(tx, user_id)
        if profile is None:
            raise ApiError(404, "profile_not_found", "Create the profile first (action create_profile).")
        current = normalise(profile)
        switches = clean.pop("notification_preferences", None)
        changed = {k: v for k, v in clean.items() if current[k] != v}
        stored = json.loads(profile["notification_preferences"] or "{}")
        if switches is not None and {**stored, **switches} != stored:  # merged with what is stored
            changed["notification_preferences"] = json.dumps({**stored, **switches}, sort_keys=True)
        await billing.update_profile(_context(app, tx), user_id, changed)
        profile = normalise(await billing.get_profile(tx, user_id))
    evict_user(app, user_id)
    return {"updated": sorted(changed), "profile": public_profile(profile)}


async def apply_subscription(ctx: DomainContext, actor: str, change: dict[str, Any]) -> dict[str, Any] | None:
    """Set a tier by hand with an audit row; None when the user does not exist."""
    user_id = change["user_id"]
    profile = await billing.get_profile(ctx.tx, user_id)
    if profile is None:
        return None
    status = change.get("status", profile["subscription_status"] if change["tier"] == profile["tier"] else None)
    fields = {"tier": change["tier"], "subscription_status": status}
    if "current_period_end" in change:  # whole seconds (an ISO time may have a fraction)
        end = change["current_period_end"]
        fields["current_period_end"] = None if end is None else int(end)
    changed = {k: v for k, v in fields.items() if profile[k] != v}
    await ctx.tx.execute(
        "INSERT INTO subscription_audit (user_id, actor, old_tier, new_tier, old_status, new_status, reason, "
        "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (user_id, actor, profile["tier"], change["tier"], profile["subscription_status"], status,
         change["reason"], ctx.now))
    if changed:
        await billing.update_profile(ctx, user_id, changed)
        await ctx.announce("subscription_changed", user_id=user_id, change=SubscriptionChange(
            subscription_id=profile["stripe_subscription_id"], old_tier=profile["tier"], tier=change["tier"],
            old_status=profile["subscription_status"], status=status,
            current_period_end=fields.get("current_period_end", profile["current_period_end"]),
            cancel_at_period_end=bool(profile["cancel_at_period_end"]), amount=None, currency=None,
            source="admin", event_id=None, reason=change["reason"], actor=actor))
    return {"user_id": user_id, "tier": change["tier"], "status": status, "changed": sorted(changed)}


def actor_of(session: Session) -> str:
    p = session.principal
    return f"admin:{p.user_id}" if p.user_id else "service"


async def update_subscription(app: web.Application, session: Session, data: Any) -> dict[str, Any] | web.Response:
    """With a key and a Stripe subscription: asked of Stripe, 202 (vibe/billing/plans.py); else by hand."""
    change = CHANGE_SUBSCRIPTION.check(data)
    profile = await billing.get_profile(app[DB], change["user_id"])
    if profile is not None and plans.in_stripe(app, profile, change):
        return web.json_response(await plans.change_in_stripe(app, actor_of(session), profile, change), status=202)
    if "tier" not in change:
        raise invalid("data.tier", "is required")
    change = {k: v for k, v in change.items() if k in SUBSCRIPTION}
    async with app[DB].transaction() as tx:
        result = await apply_subscription(_context(app, tx), actor_of(session), change)
        if result is None:
            raise ApiError(404, "profile_not_found", f"No user has the id {change['user_id']!r}.")
    evict_user(app, change["user_id"])
    return result


async def get_profile(app: web.Application, session: Session, data: Any, overview) -> dict[str, Any]:
    clean = READ.check(data)
    target = clean.get("user_id") or session.principal.user_id
    if target is None:
        raise invalid("data.user_id", "is required for the service role")
    if target != session.principal.user_id and not session.principal.is_privileged:
        raise ApiError(403, "forbidden", "You may only read your own profile.")
    profile = session.profile if target == session.principal.user_id and session.profile else \
        await load_profile(app, target)
    if profile is None:
        raise ApiError(404, "profile_not_found", f"No profile for the user {target!r}.")
    found = await overview(target)  # cached as it is; its times become ISO 8601 here
    return {"profile": public_profile(profile), **found,
            "progress": all_iso(found["progress"], "completed_at", "updated_at"),
            "achievements": all_iso(found["achievements"], "unlocked_at")}


BULK_MAX = 1000
BULK_ITEM = {**EDITABLE, "user_id": Field("str", required=True, max_length=128),
             "tier": Field("str", choices=SUBSCRIPTION_TIERS),
             "status": Field("str", nullable=True, choices=SUBSCRIPTION_STATUSES),
             "current_period_end": PERIOD_END,
             "needs_review": Field("bool"), "reason": Field("str", max_length=500, pattern=r"\S.*")}
BULK_ITEM_SHAPE = Shape(BULK_ITEM, description="a subscription change (tier, status, current_period_end) "
                                               "needs tier and reason; each item is applied or refused alone")
BULK = Shape({"items": Field("list", required=True, min_length=1, max_length=BULK_MAX, items=BULK_ITEM_SHAPE,
                             check_items=False)})


async def bulk_update(app: web.Application, session: Session, data: Any) -> dict[str, Any]:
    """Up to 1,000 changes, each validated and applied in a savepoint of its own."""
    items = BULK.check(data)["items"]
    results: list[dict[str, Any]] = []
    touched = set()
    async with app[DB].transaction() as tx:
        ctx = _context(app, tx)
        for i, raw in enumerate(items):
            results.append(await _bulk_item(ctx, actor_of(session), i, raw))
            if results[-1]["status"] == "updated":
                touched.add(results[-1]["user_id"])
    for user_id in touched:
        evict_user(app, user_id)
    counts = {s: sum(r["status"] == s for r in results) for s in ("updated", "unchanged", "invalid", "not_found", "error")}
    return {"results": results, "counts": counts}


async def _bulk_item(ctx: DomainContext, actor: str, index: int, raw: Any) -> dict[str, Any]:
    problems = Problems()
    item = BULK_ITEM_SHAPE.collect(raw, problems, where=f"data.items[{index}]")
    billing_fields = {"tier", "status", "current_period_end"} & item.keys()
    if billing_fields and ("tier" not in item or not item.get("reason")):
        problems.add(f"data.items[{index}]", "a subscription change needs tier and reason")
    user_id = item.get("user_id")
    base = {"index": index, "user_id": user_id if isinstance(user_id, str) else None}
    if problems.errors:
        return {**base, "status": "invalid", "errors": problems.errors}
    try:
        async with ctx.tx.savepoint():
            profile = await billing.get_profile(ctx.tx, user_id)
            if profile is None:
                return {**base, "status": "not_found"}
            current = normalise(profile)
            plain = {k: v for k, v in item.items() if k in EDITABLE or k == "needs_review"}
            changed = sorted(k for k, v in plain.items() if current[k] != v)
            await billing.update_profile(ctx, user_id, {k: plain[k] for k in changed})
            if "tier" in item:
                sub = await apply_subscription(ctx, actor, {k: v for k, v in item.items() if k in SUBSCRIPTION})
                changed += sub["changed"]
    except DatabaseUnavailable:
        raise
    except Exception:  # this item is rolled back to its savepoint; the others go on
        log.exception("bulk_update: item %d (user %s) failed", index, user_id)
        return {**base, "status": "error", "errors": [{"field": f"data.items[{index}]", "message": "could not be applied"}]}
    return {**base, "status": "updated" if changed else "unchanged", "changed": sorted(changed)}
