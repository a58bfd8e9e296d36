"""Reconcile: Stripe's customers and subscriptions (every status) against vibe's state.

`compare` lists both from Stripe (all pages, before any database read: no transaction is open
while Stripe answers) and reports each difference as a `Drift`: a customer whose
`metadata.userId` names a user it is not linked to; a subscription vibe has no row for, or whose
tier, status, period end or cancel-at-period-end differ (in `subscriptions`, and on the profile
whose current subscription it is). `fix` applies Stripe's current object through the same
handlers as any event: it stores an event made from it (`customer.created` for a link,
`customer.subscription.updated` for a subscription, created now, so the ordering guard lets it
win over what vibe had) with `source = 'reconcile'`, processes it, and writes each profile it
changed to `subscription_audit` (actor `reconcile`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from vibe.billing.catchup import store_listed
from vibe.billing.state import (
    GRANTING,
    BillingError,
    metadata_user_id,
    object_id,
    period_end,
    subscription_price,
    tier_for_price,
)
from vibe.billing.stripe_api import StripeApi
from vibe.config import Settings
from vibe.db.database import Database

PAGE = 100


@dataclasses.dataclass(frozen=True)
class Drift:
    kind: str  # customer | subscription | profile
    object_id: str
    user_id: str | None
    field: str
    vibe: Any
    stripe: Any

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Comparison:
    drift: list[Drift]
    customers: dict[str, dict]
    subscriptions: dict[str, dict]

    def objects_to_fix(self) -> list[tuple[str, dict]]:
        """(event type, Stripe's object) for each drifted object, links first."""
        customers = sorted({d.object_id for d in self.drift if d.kind == "customer"})
        subs = sorted({d.object_id for d in self.drift if d.kind in ("subscription", "profile")})
        return [("customer.created", self.customers[c]) for c in customers] + \
            [("customer.subscription.updated", self.subscriptions[s]) for s in subs]


async def list_all(api: StripeApi, method: Callable, params: dict[str, Any]) -> list[dict]:
    """Every object of a Stripe list, as Stripe sent them."""
    out: list[dict] = []
    params = {**params, "limit": PAGE}
    while True:
        page = await api.call(method, params)
        body = page.last_response.data if page.last_response else page.to_dict()
        data = [o for o in body.get("data") or [] if isinstance(o, dict)]
        out += data
        if not body.get("has_more") or not data:
            return out
        params = {**params, "starting_after": data[-1]["id"]}


def _expected(sub: dict, settings: Settings) -> dict[str, Any]:
    status = sub.get("status") or "incomplete"
    try:
        paid = tier_for_price(subscription_price(sub), settings)
    except BillingError as exc:  # a price with no tier: the webhook would fail the same way
        paid = f"? ({exc})"
    return {"status": status, "tier": paid, "profile_tier": paid if status in GRANTING else "free",
            "current_period_end": period_end(sub), "cancel_at_period_end": bool(sub.get("cancel_at_period_end"))}


async def compare(api: StripeApi, db: Database, settings: Settings) -> Comparison:
    customers = {c["id"]: c for c in await list_all(api, api.client.v1.customers.list_async, {})}
    subs = {s["id"]: s for s in await list_all(api, api.client.v1.subscriptions.list_async, {"status": "all"})}
    links = {r["customer_id"]: r["user_id"] for r in await db.fetchall("SELECT customer_id, user_id FROM stripe_customers")}
    rows = {r["id"]: r for r in await db.fetchall(
        "SELECT id, user_id, status, tier, current_period_end, cancel_at_period_end FROM subscriptions")}
    profiles = {r["id"]: r for r in await db.fetchall(
        "SELECT id, tier, subscription_status, current_period_end, cancel_at_period_end, stripe_subscription_id "
        "FROM profiles WHERE stripe_customer_id IS NOT NULL OR stripe_subscription_id IS NOT NULL")}
    drift: list[Drift] = []
    for cid, customer in sorted(customers.items()):
        named = metadata_user_id(customer)
        if named and links.get(cid) is None:
            drift.append(Drift("customer", cid, named, "user", None, named))
    for sid, sub in sorted(subs.items()):
        customer = object_id(sub.get("customer"))
        user = links.get(customer) or metadata_user_id(sub, customers.get(customer))
        want = _expected(sub, settings)
        row = rows.get(sid)
        if row is None:
            if want["status"] in GRANTING or user in profiles:  # an old ended one vibe never knew is no drift
                drift.append(Drift("subscription", sid, user, "subscription", None, want["status"]))
            continue
        have = {"status": row["status"], "tier": row["tier"], "current_period_end": row["current_period_end"],
                "cancel_at_period_end": bool(row["cancel_at_period_end"])}
        drift += [Drift("subscription", sid, row["user_id"], k, have[k], want[k]) for k in have
                  if _differs(have[k], want[k])]
        profile = profiles.get(row["user_id"])
        if profile is None or profile["stripe_subscription_id"] not in (None, sid):
            continue
        mine = {"tier": profile["tier"], "status": profile["subscription_status"],
                "current_period_end": profile["current_period_end"],
                "cancel_at_period_end": bool(profile["cancel_at_period_end"])}
        theirs = {**want, "tier": want["profile_tier"]}
        drift += [Drift("profile", sid, row["user_id"], k, mine[k], theirs[k]) for k in mine
                  if _differs(mine[k], theirs[k])]
    return Comparison(drift, customers, subs)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return bool(a) != bool(b)
    if isinstance(b, int) and a is not None:
        return int(a) != b
    return a != b


async def _applied(db: Database, ids: list[str], process: Callable[[], Any], timeout: float = 15.0) -> None:
    """Process the stored events here; a running service's dispatcher may take some of them
    first (SKIP LOCKED), so wait until none is still pending."""
    if not ids:
        return
    marks = ", ".join(["%s"] * len(ids))
    deadline = time.monotonic() + timeout
    while True:
        await process()
        if not await db.fetchval(f"SELECT COUNT(*) FROM stripe_events WHERE status = 'pending' AND id IN ({marks})",
                                 ids) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def reconcile_events(comparison: Comparison) -> list[dict]:
    """The events that apply Stripe's current objects, made now (so they are the newest)."""
    now = int(time.time())
    return [{"id": f"evt_reconcile_{uuid.uuid4().hex[:20]}", "object": "event", "type": event_type,
             "created": now, "livemode": bool(obj.get("livemode")), "api_version": None,
             "data": {"object": obj}, "request": {"id": None, "idempotency_key": None}}
            for event_type, obj in comparison.objects_to_fix()]


async def fix(db: Database, settings: Settings, comparison: Comparison,
              process: Callable[[], Any]) -> list[dict]:
    """Store and process the reconcile events; audit each profile they changed. Returns the
    events with the status they ended in."""
    events = reconcile_events(comparison)
    users = sorted({d.user_id for d in comparison.drift if d.user_id})
    marks = ", ".join(["%s"] * len(users))
    before = {r["id"]: r for r in await db.fetchall(
        f"SELECT id, tier, subscription_status FROM profiles WHERE id IN ({marks})", users)} if users else {}
    await store_listed(db, settings, events, source="reconcile")
    ids = [e["id"] for e in events]
    await _applied(db, ids, process)
    after = {r["id"]: r for r in await db.fetchall(
        f"SELECT id, tier, subscription_status FROM profiles WHERE id IN ({marks})", users)} if users else {}
    now = time.time()
    for user_id, new in sorted(after.items()):
        old = before.get(user_id) or {"tier": None, "subscription_status": None}
        fields = sorted({d.field for d in comparison.drift if d.user_id == user_id})
        await db.execute(
            "INSERT INTO subscription_audit (user_id, actor, old_tier, new_tier, old_status, new_status, reason, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (user_id, "reconcile", old["tier"], new["tier"], old["subscription_status"], new["subscription_status"],
             f"stripe reconcile --fix: {', '.join(fields)} differed from Stripe", now))
    if not events:
        return []
    rows = await db.fetchall(f"SELECT id, type, status, note FROM stripe_events WHERE id IN "
                             f"({', '.join(['%s'] * len(ids))})", ids)
    return sorted(rows, key=lambda r: ids.index(r["id"]))
