"""The original function's three reports (CONTRACT.md), in its shapes, from vibe's aggregates.

* `dashboard`: users, active users, page views, workshop completions, revenue and conversions
  over a `timeRange`, and the engagement per hour (`…h`) or day (`…d`). From `analytics_counts`
  and `analytics_actors` (the rollups written with the events), `analytics_revenue` less the
  refunds and lost disputes the billing views know (`analytics_business_revenue_daily.refunded`),
  the subscriptions started (`analytics_business_flow_daily`) and `profiles`. For one user
  (`userId`) the same figures come from that user's events.
* `user_insights`: a learner's profile, sessions (a new one after 30 minutes without events, as
  in the journey), page views, workshops completed (their progress and their
  `workshop_completed` events together), achievements and recent behaviour.
* `business_metrics`: one row per figure per day: the metrics servers report (the day's sum;
  `dimensions.count`: how many), `revenue` per tier and currency, `refunds` per currency,
  `workshop_completion` per workshop and the original's `subscription_<event_type>` counts.

Amounts are in the currency's smallest unit, as everywhere in vibe. Times are Unix seconds here;
the read API shows them as ISO 8601.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from vibe.analytics.model import stored_json
from vibe.analytics.queries import SESSION_GAP
from vibe.analytics.store import bucket, export_user, linked_anonymous_ids, where_user
from vibe.db.database import Database

TIME_RANGE = re.compile(r"([1-9][0-9]{0,3})([hd])")
LIMITS = {"h": 720, "d": 366}
COUNTED = {"page_view": "page_views", "workshop_completed": "workshop_completions"}
PURCHASED = "subscription_purchased"  # the original's purchase: a conversion
RECENT = 20


def time_range(value: str) -> tuple[float, float, str]:
    """`24h`, `7d`, ... as (start, end, granularity); ValueError when it is not one. The end is the
    next whole minute (always after now, also at a minute's first second), so answers are cached
    for a minute rather than never."""
    match = TIME_RANGE.fullmatch(value)
    if match is None or int(match[1]) > LIMITS[match[2]]:
        raise ValueError("'timeRange' must be a number of hours (1h to 720h) or days (1d to 366d), like 24h or 7d")
    end = float((int(time.time()) // 60 + 1) * 60)
    size = 3600 if match[2] == "h" else 86400
    return end - int(match[1]) * size, end, "hour" if match[2] == "h" else "day"


async def _sums(db: Database, sql: str, params: tuple) -> dict[str, int]:
    return {r["currency"]: int(r["n"] or 0) for r in await db.fetchall(sql, params)}


async def _totals(db: Database, start: float, end: float, granularity: str) -> dict[str, Any]:
    """Every user's figures, from the rollups."""
    first = bucket(start, granularity)
    rows = await db.fetchall(
        "SELECT bucket, event, n FROM analytics_counts WHERE granularity = %s AND bucket >= %s AND bucket < %s "
        "AND event IN (%s, %s, %s, %s)", (granularity, first, end, "*", PURCHASED, *COUNTED))
    counts = Counter({(int(r["bucket"]), r["event"]): int(r["n"]) for r in rows})
    seen = ("FROM analytics_actors WHERE granularity = %s AND event = '*' AND bucket >= %s AND bucket < %s "
            "AND actor NOT LIKE %s")
    params = (granularity, first, end, "anon:%")
    active = {int(r["bucket"]): int(r["n"]) for r in await db.fetchall(
        f"SELECT bucket, COUNT(*) AS n {seen} GROUP BY bucket", params)}
    days = (bucket(start, "day"), end)
    return {
        "users": int(await db.fetchval("SELECT COUNT(*) FROM profiles WHERE created_at < %s", (end,)) or 0),
        "active": int(await db.fetchval(f"SELECT COUNT(DISTINCT actor) {seen}", params) or 0),
        "counts": counts, "active_by_bucket": active,
        "revenue": await _sums(db, "SELECT currency, SUM(amount) AS n FROM analytics_revenue "
                                   "WHERE day >= %s AND day < %s GROUP BY currency", days),
        "refunded": await _sums(db, "SELECT currency, SUM(refunded) AS n FROM analytics_business_revenue_daily "
                                    "WHERE day >= %s AND day < %s GROUP BY currency", days),
        "paid": await _sums(db, "SELECT currency, SUM(revenue) AS n FROM analytics_business_revenue_daily "
                                "WHERE day >= %s AND day < %s GROUP BY currency", days),
        "started": int(await db.fetchval("SELECT COALESCE(SUM(new_subscribers), 0) FROM "
                                         "analytics_business_flow_daily WHERE day >= %s AND day < %s", days) or 0),
    }


async def _of_user(db: Database, user_id: str, start: float, end: float, granularity: str) -> dict[str, Any]:
    """One user's figures, from their events (and the anonymous ones linked to them)."""
    first, since = bucket(start, granularity), bucket(start, "day")
    counts: Counter = Counter()
    buckets, revenue = set(), Counter()
    for row in await export_user(db, user_id, min(first, since), end):
        if row["is_bot"]:
            continue
        props = stored_json(row["properties"]) if row["endpoint"] == "subscription-event" else {}
        if row["ts"] >= first:
            at = bucket(row["ts"], granularity)
            buckets.add(at)
            counts[(at, "*")] += 1
            counts[(at, row["event"])] += 1
        if props.get("action") == "payment" and isinstance(props.get("amount"), int) and props["amount"] > 0:
            revenue[props.get("currency") or ""] += props["amount"]
    days = (user_id, since, end)
    profile = await db.fetchval("SELECT COUNT(*) FROM profiles WHERE id = %s AND created_at < %s", (user_id, end))
    paid = ("FROM payments WHERE user_id = %s AND status = 'succeeded' AND created >= %s AND created < %s "
            "GROUP BY currency")
    lost = "SUM(amount_refunded + amount_lost)"
    return {
        "users": int(profile or 0), "active": 1 if buckets else 0, "counts": counts,
        "active_by_bucket": {b: 1 for b in buckets}, "revenue": dict(revenue),
        "refunded": await _sums(db, f"SELECT currency, {lost} AS n {paid}", days),
        "paid": await _sums(db, f"SELECT currency, SUM(amount) - {lost} AS n {paid}", days),
        "started": int(await db.fetchval("SELECT COUNT(*) FROM subscriptions WHERE user_id = %s AND started_at >= %s "
                                         "AND started_at < %s", days) or 0),
    }


async def dashboard(db: Database, start: float, end: float, granularity: str, user_id: str | None,
                    *, revenue_kept: bool = True) -> dict[str, Any]:
    """`{"data": {"overview", "revenue", "user_engagement"}}`. `revenue_kept`: a loaded plugin keeps
    `analytics_revenue` (then revenue is its payments less refunds, else the billing views' net)."""
    f = await (_of_user(db, user_id, start, end, granularity) if user_id else _totals(db, start, end, granularity))
    counts, total = f["counts"], Counter()
    for (_, event), n in counts.items():
        total[event] += n
    if revenue_kept:
        net = Counter(f["revenue"])
        net.subtract(f["refunded"])
    else:
        net = Counter(f["paid"])
    by_currency = [{"currency": c, "amount": int(n)} for c, n in sorted(net.items()) if c]
    main = max(by_currency, key=lambda r: r["amount"], default={"currency": None, "amount": 0})
    size = 3600 if granularity == "hour" else 86400
    engagement = [{"date": b, "active_users": f["active_by_bucket"].get(b, 0), "events": counts[(b, "*")],
                   **{name: counts[(b, event)] for event, name in COUNTED.items()}}
                  for b in range(bucket(start, granularity), int(end), size)]
    return {"data": {
        "overview": {"total_users": f["users"], "active_users": f["active"],
                     **{name: total[event] for event, name in COUNTED.items()}},
        "revenue": {"total_revenue": main["amount"], "currency": main["currency"], "by_currency": by_currency,
                    "subscription_conversions": f["started"] + total[PURCHASED]},
        "user_engagement": engagement,
    }, "from": start, "to": end, "user_id": user_id}


def activity(row: dict[str, Any]) -> dict[str, Any]:
    """An event as the original's behaviour row: what was done to which resource, and when."""
    props = stored_json(row["properties"])
    props = props if isinstance(props, dict) else {}
    kind = {"page_view": "page", "workshop_completed": "workshop"}.get(row["event"])
    resource_id = props.get("resource_id") or (props.get("workshop_id") if kind == "workshop" else None) or \
        (props.get("url") or props.get("path") if kind == "page" else None)
    found = {"action": props.get("action") if row["event"] == "user_behavior" else row["event"],
             "resource_type": props.get("resource_type") or kind, "resource_id": resource_id}
    return {**{k: v if v is None or isinstance(v, str) else str(v) for k, v in found.items()}, "timestamp": row["ts"]}


async def user_insights(db: Database, user_id: str, *, linked: bool) -> dict[str, Any]:
    """`{"data": {"profile", "activity_summary", "recent_activity"}}` (bots left out). `linked`: with
    the anonymous events linked to the user (the admin view), as the journey does."""
    async with db.transaction() as tx:
        where, extra = where_user(await linked_anonymous_ids(tx, user_id) if linked else [])
        mine, params = f"FROM analytics_events WHERE {where} AND is_bot = %s", [user_id, *extra, False]
        times = [r["ts"] for r in await tx.fetchall(f"SELECT ts {mine} ORDER BY ts", params)]
        views = await tx.fetchval(f"SELECT COUNT(*) {mine} AND event = %s", [*params, "page_view"])
        completed = await tx.fetchall(f"SELECT properties {mine} AND event = %s", [*params, "workshop_completed"])
        recent = await tx.fetchall(f"SELECT event, ts, properties {mine} ORDER BY ts DESC, id DESC LIMIT {RECENT}",
                                   params)
        progress = await tx.fetchall("SELECT resource_id FROM user_progress WHERE user_id = %s AND "
                                     "resource_type = 'workshop' AND status = 'completed'", (user_id,))
        achievements = await tx.fetchval("SELECT COUNT(*) FROM user_achievements WHERE user_id = %s", (user_id,))
        profile = await tx.fetchone(
            "SELECT id, email, full_name, display_name, avatar_url, locale, tier, subscription_status, "
            "current_period_end, referral_code, created_at, updated_at FROM profiles WHERE id = %s", (user_id,))
    workshops = {r["resource_id"] for r in progress}
    for row in completed:
        props = stored_json(row["properties"])
        if isinstance(props, dict) and isinstance(props.get("workshop_id"), str):
            workshops.add(props["workshop_id"])
    sessions = sum(1 for i, ts in enumerate(times) if i == 0 or ts - times[i - 1] > SESSION_GAP)
    return {"data": {
        "profile": dict(profile) if profile else None,
        "activity_summary": {"total_sessions": sessions, "total_page_views": int(views or 0),
                             "workshops_completed": len(workshops), "achievements_earned": int(achievements or 0)},
        "recent_activity": [activity(r) for r in recent],
    }}


async def business_metrics(db: Database, start: float, end: float, metric_type: str | None) -> dict[str, Any]:
    """`{"data": [{"metric_type", "value", "dimensions", "timestamp"}]}` per day, oldest first."""
    days = (bucket(start, "day"), end)
    rows: list[dict[str, Any]] = []
    for r in await db.fetchall("SELECT day, name, n, total FROM analytics_business_metrics "
                               "WHERE day >= %s AND day < %s", days):
        rows.append({"metric_type": r["name"], "value": float(r["total"]), "dimensions": {"count": int(r["n"])},
                     "timestamp": r["day"]})
    for r in await db.fetchall("SELECT day, tier, currency, amount, payments FROM analytics_revenue "
                               "WHERE day >= %s AND day < %s", days):
        rows.append({"metric_type": "revenue", "value": int(r["amount"]), "timestamp": r["day"], "dimensions": {
            "subscription_tier": r["tier"], "currency": r["currency"], "payments": int(r["payments"])}})
    for r in await db.fetchall("SELECT day, currency, refunded FROM analytics_business_revenue_daily "
                               "WHERE day >= %s AND day < %s AND refunded > 0", days):
        rows.append({"metric_type": "refunds", "value": int(r["refunded"]), "timestamp": r["day"],
                     "dimensions": {"currency": r["currency"]}})
    for r in await db.fetchall("SELECT day, workshop_id, n FROM analytics_workshop_completions "
                               "WHERE day >= %s AND day < %s", days):
        rows.append({"metric_type": "workshop_completion", "value": int(r["n"]), "timestamp": r["day"],
                     "dimensions": {"workshop_id": r["workshop_id"]}})
    for r in await db.fetchall("SELECT bucket, event, n FROM analytics_counts WHERE granularity = 'day' AND "
                               "bucket >= %s AND bucket < %s AND event LIKE %s ESCAPE '!' AND event <> %s",
                               (*days, "subscription!_%", "subscription_event")):
        rows.append({"metric_type": r["event"], "value": int(r["n"]), "timestamp": r["bucket"], "dimensions": {}})
    rows = [r for r in rows if metric_type is None or r["metric_type"] == metric_type]
    rows.sort(key=lambda r: (r["timestamp"], r["metric_type"], sorted(map(str, r["dimensions"].values()))))
    return {"data": rows, "from": start, "to": end}
