"""Learning progress: `sync_progress` (idempotent, never backwards) and the progress overview.

A sync locks the learner's profile row, so two syncs of one learner run one after the other;
each item moves forward only (not_started < in_progress < completed; progress never drops;
the first completion time is kept). A workshop completed for the first time is announced with
`workshop_completed` (a `vibe.users.domain.CompletedItem`), and each achievement (data: the
`achievements` table) the learner now meets is recorded once and announced with
`achievement_unlocked` (an `Achievement`), in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from vibe.db.row_security import as_user, reading_as_user
from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.plugins.context import DomainContext
from vibe.users.access import Catalogue
from vibe.users.domain import Achievement, CompletedItem
from vibe.users.keys import QUERY_CACHE
from vibe.web.errors import ApiError
from vibe.web.times import all_iso
from vibe.web.validation import Field, Problems, Shape

MAX_ITEMS = 500
STATUSES = ("not_started", "in_progress", "completed")
RANK = {s: i for i, s in enumerate(STATUSES)}
FUTURE_LEEWAY = 300


ITEM = Shape({
    "resource_type": Field("str", required=True, choices="resource_types",
                           description="a resource type of the access catalogue"),
    "resource_id": Field("str", required=True, max_length=64),
    "status": Field("str", required=True, choices=STATUSES),
    "progress": Field("number", minimum=0, maximum=100),
    "completed_at": Field("time", nullable=True, minimum=0,
                          description=f"ISO 8601 or Unix seconds, at most {FUTURE_LEEWAY} s in the future"),
})
SYNC = Shape({"items": Field("list", required=True, min_length=1, max_length=MAX_ITEMS, items=ITEM)})


def validate_items(data: Any, cat: Catalogue, now: float) -> list[dict[str, Any]]:
    problems = Problems()
    items = SYNC.collect(data, problems, vocab={"resource_types": cat.types}).get("items") or []
    latest = now + FUTURE_LEEWAY
    for i, item in enumerate(items if isinstance(items, list) and len(items) <= MAX_ITEMS else []):
        if not isinstance(item, dict):
            continue
        where = f"data.items[{i}]"
        key = (item.get("resource_type"), item.get("resource_id"))
        if isinstance(key[0], str) and isinstance(key[1], str) and key[0] in cat.types and key not in cat.rules:
            problems.add(f"{where}.resource_id", f"no {key[0]} has the id {key[1]!r}")
        if isinstance(item.get("completed_at"), (int, float)) and item["completed_at"] > latest:
            problems.add(f"{where}.completed_at", f"must be between 0 and {latest}")
    problems.raise_if_any()
    return items


def merge(old: dict[str, Any] | None, new: dict[str, Any], now: float) -> dict[str, Any]:
    """The item's state after applying `new` to `old`: never backwards."""
    status = new["status"]
    progress = float(new.get("progress") or 0)
    if status == "completed":
        progress = 100.0
    completed_at = (new.get("completed_at") or now) if status == "completed" else None
    if old is not None:
        if RANK[old["status"]] > RANK[status]:
            status = old["status"]
        progress = max(progress, float(old["progress"]))
        if old["completed_at"] is not None:
            completed_at = float(old["completed_at"])
    return {"resource_type": new["resource_type"], "resource_id": new["resource_id"], "status": status,
            "progress": progress, "completed_at": completed_at if status == "completed" else None}


async def sync(app: web.Application, user_id: str, data: Any, cat: Catalogue) -> dict[str, Any]:
    now = time.time()
    items = validate_items(data, cat, now)
    db = app[DB]
    async with db.transaction() as tx:
        if await tx.fetchval("SELECT id FROM profiles WHERE id = %s FOR UPDATE", (user_id,)) is None:
            raise ApiError(404, "profile_not_found", "Create the profile first (action create_profile).")
        async with as_user(tx, user_id):
            rows = await tx.fetchall("SELECT * FROM user_progress WHERE user_id = %s", (user_id,))
            state = {(r["resource_type"], r["resource_id"]): r for r in rows}
            changed: dict[tuple[str, str], dict[str, Any]] = {}
            for item in items:
                key = (item["resource_type"], item["resource_id"])
                before = changed.get(key) or state.get(key)
                after = merge(before, item, now)
                if before is None or any(after[k] != _num(before[k]) for k in ("status", "progress", "completed_at")):
                    changed[key] = after
            inserts = [c for k, c in changed.items() if k not in state]
            updates = [c for k, c in changed.items() if k in state]
            await tx.executemany(
                "INSERT INTO user_progress (user_id, resource_type, resource_id, status, progress, completed_at, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(user_id, c["resource_type"], c["resource_id"], c["status"], c["progress"], c["completed_at"], now)
                 for c in inserts])
            await tx.executemany(
                "UPDATE user_progress SET status = %s, progress = %s, completed_at = %s, updated_at = %s "
                "WHERE user_id = %s AND resource_type = %s AND resource_id = %s",
                [(c["status"], c["progress"], c["completed_at"], now, user_id, c["resource_type"], c["resource_id"])
                 for c in updates])
            completed_workshops = [c for k, c in changed.items() if c["resource_type"] == "workshop"
                                   and c["status"] == "completed" and (k not in state or state[k]["status"] != "completed")]
            unlocked = await _unlock(tx, user_id, cat, now)
        ctx = DomainContext(tx=tx, settings=app[SETTINGS], pm=app[PLUGINS], now=now)
        for item in completed_workshops:
            await ctx.announce("workshop_completed", user_id=user_id, workshop_id=item["resource_id"],
                               item=CompletedItem.from_row(item))
        for achievement in unlocked:
            await ctx.announce("achievement_unlocked", user_id=user_id, achievement=achievement)
    app[QUERY_CACHE].invalidate_key(overview_key(user_id))
    return {"received": len(items), "changed": len(changed), "unchanged": len(items) - len(changed),
            "completed_workshops": [c["resource_id"] for c in completed_workshops],
            "achievements": all_iso([a.as_dict() for a in unlocked], "unlocked_at")}


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


async def _unlock(tx, user_id: str, cat: Catalogue, now: float) -> list[Achievement]:
    """Record and return the achievements the learner meets now and had not unlocked yet."""
    pending = await tx.fetchall(
        "SELECT key, name, description, resource_type, threshold FROM achievements WHERE key NOT IN "
        "(SELECT achievement_key FROM user_achievements WHERE user_id = %s) ORDER BY key", (user_id,))
    if not pending:
        return []
    counts = {r["resource_type"]: int(r["n"]) for r in await tx.fetchall(
        "SELECT resource_type, COUNT(*) AS n FROM user_progress WHERE user_id = %s AND status = 'completed' "
        "GROUP BY resource_type", (user_id,))}
    unlocked = []
    for a in pending:
        kind, threshold = a["resource_type"], a["threshold"]
        done = sum(counts.values()) if kind is None else counts.get(kind, 0)
        needed = int(threshold) if threshold is not None else (
            sum(cat.counts.values()) if kind is None else cat.counts.get(kind, 0))
        if needed > 0 and done >= needed:
            await tx.execute("INSERT INTO user_achievements (user_id, achievement_key, unlocked_at) VALUES (%s, %s, %s)",
                             (user_id, a["key"], now))
            unlocked.append(Achievement(key=a["key"], name=a["name"], description=a["description"],
                                        unlocked_at=now))
    return unlocked


def overview_key(user_id: str) -> tuple[str, str, str]:
    return ("user", user_id, "overview")


async def overview(app: web.Application, user_id: str, cat: Catalogue) -> dict[str, Any]:
    """Progress items, summary, achievements and referral earnings (DatabaseQueryCache)."""
    cache = app[QUERY_CACHE]
    key = overview_key(user_id)
    cached = cache.get(key)
    if cached is not None:
        return cached
    loaded_at = time.monotonic()
    db = app[DB]
    referred = await db.fetchval("SELECT COUNT(*) FROM profiles WHERE referred_by = %s", (user_id,))
    async with reading_as_user(db, user_id) as reader:
        items = await reader.fetchall(
            "SELECT resource_type, resource_id, status, progress, completed_at, updated_at FROM user_progress "
            "WHERE user_id = %s ORDER BY resource_type, resource_id", (user_id,))
        achievements = await reader.fetchall(
            "SELECT a.key, a.name, a.description, u.unlocked_at FROM user_achievements u JOIN achievements a "
            "ON a.key = u.achievement_key WHERE u.user_id = %s ORDER BY u.unlocked_at, a.key", (user_id,))
        earnings = await reader.fetchall(
            "SELECT currency, SUM(amount) AS amount, COUNT(*) AS commissions FROM commissions "
            "WHERE referrer_id = %s GROUP BY currency ORDER BY currency", (user_id,))
    by_type = {t: {"total": n, "completed": 0, "in_progress": 0} for t, n in cat.counts.items()}
    for item in items:
        item["progress"] = float(item["progress"])
        counts = by_type.setdefault(item["resource_type"], {"total": 0, "completed": 0, "in_progress": 0})
        if item["status"] in ("completed", "in_progress"):
            counts[item["status"]] += 1
    total = sum(cat.counts.values())
    completed = sum(c["completed"] for c in by_type.values())
    result = {
        "progress": items,
        "summary": {"total": total, "completed": completed,
                    "in_progress": sum(c["in_progress"] for c in by_type.values()),
                    "percent": round(100.0 * completed / total, 1) if total else 0.0, "by_type": by_type},
        "achievements": achievements,
        "referrals": {"referred_users": int(referred or 0),
                      "earnings": [{"currency": e["currency"], "amount": int(e["amount"]),
                                    "commissions": int(e["commissions"])} for e in earnings]},
    }
    cache.set(key, result, loaded_at=loaded_at)
    return result


async def recent_progress(tx, user_id: str, since: float) -> tuple[list[dict[str, Any]], list[str]]:
    """What a learner completed since `since` (resource_type, resource_id; oldest first) and the
    names of the achievements they unlocked since then (the weekly report's material)."""
    done = await tx.fetchall(
        "SELECT resource_type, resource_id FROM user_progress WHERE user_id = %s AND status = 'completed' "
        "AND completed_at >= %s ORDER BY completed_at", (user_id, since),
    )
    unlocked = await tx.fetchall(
        "SELECT a.name FROM user_achievements u JOIN achievements a ON a.key = u.achievement_key "
        "WHERE u.user_id = %s AND u.unlocked_at >= %s ORDER BY u.unlocked_at", (user_id, since),
    )
    return done, [r["name"] for r in unlocked]
