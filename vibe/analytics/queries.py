"""Reading analytics: metrics series, business figures, journeys and funnels.

Real-time figures come from the rollups (written with the events, so a read right after an
acknowledged write sees it). Business figures come from the `analytics_business_*` views:
materialized on PostgreSQL (refreshed concurrently on a schedule), plain views on SQLite.
"""

from __future__ import annotations

from typing import Any, Sequence

from vibe.analytics.model import stored_event
from vibe.analytics.store import GRANULARITIES, bucket, export_user
from vibe.db.database import Database

SESSION_GAP = 30 * 60
MAX_BUCKETS = 5000
BUSINESS_VIEWS = ("analytics_business_subscribers", "analytics_business_revenue_daily",
                  "analytics_business_flow_daily", "analytics_business_conversion_daily")


async def metrics(db: Database, name: str, start: float, end: float, granularity: str) -> dict[str, Any]:
    """Counts and distinct actors of event `name` ('*': all) per bucket in [start, end), zeros included."""
    size = GRANULARITIES[granularity]
    first, last = bucket(start, granularity), bucket(end - 1e-6, granularity) if end > start else None
    if last is None or (last - first) // size + 1 > MAX_BUCKETS:
        raise ValueError(f"the range must hold 1 to {MAX_BUCKETS} {granularity}s")
    params = (granularity, name, first, last)
    counts = await db.fetchall(
        "SELECT bucket, n FROM analytics_counts WHERE granularity = %s AND event = %s "
        "AND bucket >= %s AND bucket <= %s", params,
    )
    users = await db.fetchall(
        "SELECT bucket, COUNT(*) AS n FROM analytics_actors WHERE granularity = %s AND event = %s "
        "AND bucket >= %s AND bucket <= %s GROUP BY bucket", params,
    )
    by_count = {int(r["bucket"]): int(r["n"]) for r in counts}
    by_users = {int(r["bucket"]): int(r["n"]) for r in users}
    series = [{"start": b, "count": by_count.get(b, 0), "users": by_users.get(b, 0)}
              for b in range(first, last + 1, size)]
    return {"name": name, "interval": granularity, "series": series}


# The rollups other than counts, by the name the read API gives them: (table, group by, sums).
ROLLUPS = {
    "pages": ("analytics_page_views", ("path",), ("n",)),
    "workshops": ("analytics_workshop_completions", ("workshop_id",),
                  ("n", "scored", "score_sum", "timed", "duration_sum")),
    "revenue": ("analytics_revenue", ("day", "tier", "currency"), ("amount", "payments")),
    "business-metrics": ("analytics_business_metrics", ("name",), ("n", "total")),
}
RENAME = {"pages": "views", "workshops": "completions", "business-metrics": "count"}  # what `n` counts


async def rollup(db: Database, kind: str, start: float, end: float) -> dict[str, Any]:
    """Sums of a daily rollup table over the days in [start, end), grouped as ROLLUPS says."""
    table, keys, sums = ROLLUPS[kind]
    group = ", ".join(keys)
    rows = await db.fetchall(
        f"SELECT {group}, {', '.join(f'SUM({s}) AS {s}' for s in sums)} FROM {table} "
        f"WHERE day >= %s AND day < %s GROUP BY {group} ORDER BY {group}",
        (bucket(start, "day"), end),
    )
    out = []
    for row in rows:
        item = {k: row[k] for k in keys}
        item.update({s: float(row[s]) if s in ("score_sum", "duration_sum", "total") else int(row[s]) for s in sums})
        if "n" in item:
            item[RENAME[kind]] = item.pop("n")
        if kind == "workshops":
            scored, timed = item.pop("scored"), item.pop("timed")
            score_sum, duration_sum = item.pop("score_sum"), item.pop("duration_sum")
            item["average_score"] = round(score_sum / scored, 2) if scored else None
            item["average_duration"] = round(duration_sum / timed, 2) if timed else None
        out.append(item)
    return {"kind": kind, "from": start, "to": end, "rows": out}


async def business(db: Database, start: float, end: float) -> dict[str, Any]:
    params = (bucket(start, "day"), end)
    subscribers = await db.fetchall(
        "SELECT tier, currency, active, mrr FROM analytics_business_subscribers ORDER BY tier, currency")
    revenue = await db.fetchall(
        "SELECT currency, SUM(revenue) AS revenue, SUM(payments) AS payments, "
        "SUM(referral_revenue) AS referral_revenue FROM analytics_business_revenue_daily "
        "WHERE day >= %s AND day < %s GROUP BY currency ORDER BY currency", params)
    flow = await db.fetchone(
        "SELECT COALESCE(SUM(new_subscribers), 0) AS new, COALESCE(SUM(churned_subscribers), 0) AS churned "
        "FROM analytics_business_flow_daily WHERE day >= %s AND day < %s", params)
    conversion = await db.fetchone(
        "SELECT COALESCE(SUM(signups), 0) AS signups, COALESCE(SUM(converted), 0) AS converted "
        "FROM analytics_business_conversion_daily WHERE day >= %s AND day < %s", params)
    users = int(await db.fetchval("SELECT COUNT(*) FROM profiles WHERE created_at < %s", (end,)) or 0)
    by_tier: dict[str, int] = {}
    mrr: dict[str, float] = {}
    for row in subscribers:
        by_tier[row["tier"]] = by_tier.get(row["tier"], 0) + int(row["active"])
        if row["currency"]:
            mrr[row["currency"]] = mrr.get(row["currency"], 0.0) + float(row["mrr"] or 0)
    signups, converted = int(conversion["signups"]), int(conversion["converted"])
    return {
        "from": start, "to": end,
        "mrr": [{"currency": c, "amount": round(v)} for c, v in sorted(mrr.items())],
        "active_subscribers": by_tier,
        "new_subscribers": int(flow["new"]), "churned_subscribers": int(flow["churned"]),
        # net revenue: each payment less its refunds and lost disputes (sql/040_payments_links.*)
        "revenue": [{"currency": r["currency"], "amount": int(r["revenue"]), "payments": int(r["payments"])}
                    for r in revenue],
        "arpu": [{"currency": r["currency"], "amount": round(int(r["revenue"]) / users, 2) if users else 0.0}
                 for r in revenue],
        "users": users,
        "conversion": {"signups": signups, "converted": converted,
                       "rate": round(converted / signups, 4) if signups else 0.0},
        "referral_revenue": [{"currency": r["currency"], "amount": int(r["referral_revenue"])} for r in revenue],
    }


async def refresh_business_views(db: Database) -> None:
    """PostgreSQL: refresh the materialized views without blocking readers (no-op on SQLite)."""
    if db.dialect != "postgresql":
        return
    for view in BUSINESS_VIEWS:
        async with db.transaction() as tx:
            await tx.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")


def split_sessions(events: Sequence[dict[str, Any]], gap: float = SESSION_GAP) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = []
    for event in events:
        if not sessions or event["timestamp"] - sessions[-1]["end"] > gap:
            sessions.append({"start": event["timestamp"], "end": event["timestamp"], "events": []})
        sessions[-1]["end"] = event["timestamp"]
        sessions[-1]["events"].append(event)
    return sessions


async def journey(db: Database, user_id: str, start: float | None, end: float | None,
                  limit: int, *, linked: bool = True) -> dict[str, Any]:
    """The user's last `limit` events in [start, end) as sessions; `linked`: with the anonymous
    events linked to them (the admin view), else only those sent with their id (their own)."""
    rows = await export_user(db, user_id, start, end, linked=linked)
    truncated = len(rows) > limit
    events = [stored_event(r) for r in rows[-limit:]]
    return {"user_id": user_id, "sessions": split_sessions(events), "truncated": truncated}


async def funnel(db: Database, steps: Sequence[str], start: float, end: float) -> dict[str, Any]:
    """How many actors did steps[0], then steps[1] after it, ... (bots left out)."""
    marks = ", ".join(["%s"] * len(steps))
    rows = await db.fetchall(
        f"SELECT user_id, anonymous_id, event, ts FROM analytics_events WHERE event IN ({marks}) "
        "AND ts >= %s AND ts < %s AND is_bot = %s ORDER BY ts, id", (*steps, start, end, False),
    )
    progress: dict[str, int] = {}
    for row in rows:
        actor = row["user_id"] or f"anon:{row['anonymous_id']}"
        done = progress.get(actor, 0)
        if done < len(steps) and row["event"] == steps[done]:
            progress[actor] = done + 1
    reached = [sum(1 for d in progress.values() if d > i) for i in range(len(steps))]
    return {"from": start, "to": end, "steps": [{"step": s, "users": n} for s, n in zip(steps, reached)]}
