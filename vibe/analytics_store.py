"""Writing analytics: events deduplicated by message_id, and their rollups, in one transaction.

`store_events(tx, events, endpoints)` inserts the events a transaction carries (a group-commit
batch of many requests, or the events a domain hook records) with multi-row statements, and
updates the rollups of the events that are new and not from bots: counts and distinct actors
per event name per hour and per day (event '*' for all), then each endpoint's own `rollup`.
Rollup keys are sorted, so concurrent transactions lock rows in the same order (no deadlocks).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from .analytics_model import AnalyticsEndpoint, Event, event_row
from .database import Database, Transaction

EVENT_COLUMNS = ("message_id", "endpoint", "event", "user_id", "anonymous_id", "session_id", "ts",
                 "received_at", "sent_at", "properties", "context", "is_bot", "source")
GRANULARITIES = {"hour": 3600, "day": 86400}
CHUNK = 200  # rows per multi-row statement (13 columns: well under SQLite's variable limit)


def bucket(ts: float, granularity: str) -> int:
    size = GRANULARITIES[granularity]
    return int(ts // size) * size


def day(ts: float) -> int:
    return bucket(ts, "day")


async def upsert_sum(tx: Transaction, table: str, keys: Sequence[str], sums: Sequence[str],
                     rows: Mapping[tuple, Sequence[Any]]) -> None:
    """`INSERT ... ON CONFLICT (keys) DO UPDATE SET s = s + EXCLUDED.s` for many rows, sorted by key."""
    items = sorted(rows.items())
    for start in range(0, len(items), CHUNK):
        part = items[start:start + CHUNK]
        width = len(keys) + len(sums)
        values = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(part))
        updates = ", ".join(f"{s} = {table}.{s} + EXCLUDED.{s}" for s in sums)
        params = [v for key, add in part for v in (*key, *add)]
        await tx.execute(
            f"INSERT INTO {table} ({', '.join(keys)}, {', '.join(sums)}) VALUES {values} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}", params,
        )


async def insert_ignore(tx: Transaction, table: str, columns: Sequence[str], rows: Iterable[tuple],
                        returning: str | None = None) -> list[Any]:
    """Multi-row `INSERT ... ON CONFLICT DO NOTHING`; returns the `returning` column of new rows."""
    rows = list(rows)
    found: list[Any] = []
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(part))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} ON CONFLICT DO NOTHING"
        params = [v for row in part for v in row]
        if returning:
            found.extend(r[returning] for r in await tx.fetchall(f"{sql} RETURNING {returning}", params))
        else:
            await tx.execute(sql, params)
    return found


async def store_events(tx: Transaction, events: Sequence[Event],
                       endpoints: Mapping[str, AnalyticsEndpoint]) -> list[str]:
    """Insert `events`; return `accepted` or `duplicate` for each, in order."""
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        first.setdefault(event.message_id, index)
    unique = [events[i] for i in sorted(first.values())]
    inserted = set(await insert_ignore(tx, "analytics_events", EVENT_COLUMNS, map(event_row, unique),
                                       returning="message_id"))
    new = [e for e in unique if e.message_id in inserted]
    await update_rollups(tx, [e for e in new if not e.is_bot], endpoints)
    return ["accepted" if first[e.message_id] == i and e.message_id in inserted else "duplicate"
            for i, e in enumerate(events)]


async def update_rollups(tx: Transaction, events: Sequence[Event],
                         endpoints: Mapping[str, AnalyticsEndpoint]) -> None:
    if not events:
        return
    counts: Counter = Counter()
    actors: set[tuple] = set()
    for event in events:
        for granularity in GRANULARITIES:
            start = bucket(event.ts, granularity)
            for name in (event.event, "*"):
                counts[(granularity, start, name)] += 1
                actors.add((granularity, start, name, event.actor))
    await upsert_sum(tx, "analytics_counts", ("granularity", "bucket", "event"), ("n",),
                     {key: (n,) for key, n in counts.items()})
    await insert_ignore(tx, "analytics_actors", ("granularity", "bucket", "event", "actor"), sorted(actors))
    by_endpoint: dict[str, list[Event]] = {}
    for event in events:
        by_endpoint.setdefault(event.endpoint, []).append(event)
    for name in sorted(by_endpoint):
        endpoint = endpoints.get(name)
        if endpoint is not None and endpoint.rollup is not None:
            await endpoint.rollup(tx, by_endpoint[name])


async def linked_anonymous_ids(tx: Transaction, user_id: str) -> list[str]:
    rows = await tx.fetchall(
        "SELECT DISTINCT anonymous_id FROM analytics_events WHERE user_id = %s AND anonymous_id IS NOT NULL",
        (user_id,),
    )
    return [r["anonymous_id"] for r in rows]


def _where_user(anonymous_ids: Sequence[str]) -> tuple[str, list[str]]:
    if not anonymous_ids:
        return "user_id = %s", []
    marks = ", ".join(["%s"] * len(anonymous_ids))
    return f"(user_id = %s OR (user_id IS NULL AND anonymous_id IN ({marks})))", list(anonymous_ids)


async def forget_user(db: Database, user_id: str) -> dict[str, int]:
    """Erase a user's events (and those of the anonymous ids they used) and their distinct-actor
    share; the anonymous totals (counts, page views, revenue) stay. Recorded in analytics_erasures."""
    async with db.transaction() as tx:
        anonymous_ids = await linked_anonymous_ids(tx, user_id)
        where, extra = _where_user(anonymous_ids)
        events = await tx.execute(f"DELETE FROM analytics_events WHERE {where}", [user_id, *extra])
        actor_list = [user_id, *(f"anon:{a}" for a in anonymous_ids)]
        marks = ", ".join(["%s"] * len(actor_list))
        actors = await tx.execute(f"DELETE FROM analytics_actors WHERE actor IN ({marks})", actor_list)
        await tx.execute(
            "INSERT INTO analytics_erasures (user_hash, events_deleted, erased_at) VALUES (%s, %s, %s)",
            (hashlib.sha256(user_id.encode()).hexdigest(), events, time.time()),
        )
    return {"events_deleted": events, "actor_rows_deleted": actors, "anonymous_ids": len(anonymous_ids)}


async def export_user(db: Database, user_id: str) -> list[dict[str, Any]]:
    """Every stored event of a user (and of the anonymous ids they used), oldest first."""
    async with db.transaction() as tx:
        anonymous_ids = await linked_anonymous_ids(tx, user_id)
        where, extra = _where_user(anonymous_ids)
        return await tx.fetchall(
            f"SELECT * FROM analytics_events WHERE {where} ORDER BY ts, id", [user_id, *extra]
        )


async def delete_expired(db: Database, retention_days: int, *, chunk: int = 5000) -> int:
    """Delete raw events received more than `retention_days` ago, a chunk per transaction."""
    cutoff = time.time() - retention_days * 86400
    total = 0
    while True:
        async with db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM analytics_events WHERE id IN "
                "(SELECT id FROM analytics_events WHERE received_at < %s ORDER BY id LIMIT %s)",
                (cutoff, chunk),
            )
        total += max(deleted, 0)
        if deleted < chunk:
            return total
