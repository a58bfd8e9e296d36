"""Writing analytics: events deduplicated by message_id per sender, and their rollups, in one
transaction.

`store_events(tx, events, endpoints)` inserts the events a transaction carries (a group-commit
batch of many requests, or the events a domain hook records) with multi-row statements, and
updates the rollups of the events that are new and not from bots: counts and distinct actors
per event name per hour and per day (event '*' for all), then each endpoint's own `rollup`.
Rollup keys are sorted, so concurrent transactions lock rows in the same order (no deadlocks).

A message_id is unique within its sender's scope (`Event.scope`: the signed-in user, the
anonymous id, `server`), so one sender's id never makes another's event a duplicate. A new event
carrying both a user id and an anonymous id links that anonymous id to the user
(`analytics_anonymous_links`) unless it is linked already: the first link stays. Admin views and
erasure follow the links; a user's own view (`linked=False`) shows only events with their id.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import cachetools

from vibe.analytics.model import AnalyticsEndpoint, Event, event_row
from vibe.db.database import Database, Transaction, rows_source

EVENT_COLUMNS = ("message_id", "endpoint", "event", "user_id", "anonymous_id", "session_id", "ts",
                 "received_at", "sent_at", "properties", "context", "is_bot", "source", "sender_scope")
GRANULARITIES = {"hour": 3600, "day": 86400}
CHUNK = 1000  # rows per statement (14 columns: 14,000 SQLite variables, under its 32,766 limit)


def bucket(ts: float, granularity: str) -> int:
    size = GRANULARITIES[granularity]
    return int(ts // size) * size


def day(ts: float) -> int:
    return bucket(ts, "day")


async def upsert_sum(tx: Transaction, table: str, keys: Sequence[str], sums: Sequence[str],
                     rows: Mapping[tuple, Sequence[Any]]) -> None:
    """`INSERT ... ON CONFLICT (keys) DO UPDATE SET s = s + EXCLUDED.s` for many rows, sorted by key.
    Deferred: nobody reads the result, so it rides with the transaction's next statement."""
    items = sorted(rows.items())
    columns = (*keys, *sums)
    updates = ", ".join(f"{s} = {table}.{s} + EXCLUDED.{s}" for s in sums)
    for start in range(0, len(items), CHUNK):
        source, params = rows_source(tx, table, columns, [(*key, *add) for key, add in items[start:start + CHUNK]])
        tx.defer(f"INSERT INTO {table} ({', '.join(columns)}) {source} "
                 f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}", params)


async def insert_ignore(tx: Transaction, table: str, columns: Sequence[str], rows: Iterable[tuple],
                        returning: str | tuple[str, ...] | None = None) -> list[Any]:
    """Multi-row `INSERT ... ON CONFLICT DO NOTHING`; returns the `returning` column of new rows
    (a tuple of them when `returning` names several). Without `returning` the insert is deferred
    (it rides with the transaction's next statement)."""
    rows = list(rows)
    found: list[Any] = []
    for start in range(0, len(rows), CHUNK):
        source, params = rows_source(tx, table, columns, rows[start:start + CHUNK])
        sql = f"INSERT INTO {table} ({', '.join(columns)}) {source} ON CONFLICT DO NOTHING"
        if isinstance(returning, tuple):
            found.extend(tuple(r[c] for c in returning)
                         for r in await tx.fetchall(f"{sql} RETURNING {', '.join(returning)}", params))
        elif returning:
            found.extend(r[returning] for r in await tx.fetchall(f"{sql} RETURNING {returning}", params))
        else:
            tx.defer(sql, params)
    return found


class SeenActors:
    """The analytics_actors keys this process knows are committed, so a busy learner's hundredth
    event in an hour does not insert the same four rows again. Keys are added only after their
    transaction committed (`mark`), and the whole set is dropped on any erasure (`clear`), which
    is when rows leave the table."""

    def __init__(self, maxsize: int = 200_000):
        self._keys: cachetools.LRUCache = cachetools.LRUCache(maxsize=maxsize)

    def __contains__(self, key: tuple) -> bool:
        return key in self._keys

    def mark(self, keys: Iterable[tuple]) -> None:
        for key in keys:
            self._keys[key] = True

    def clear(self) -> None:
        self._keys.clear()


async def store_events(tx: Transaction, events: Sequence[Event], endpoints: Mapping[str, AnalyticsEndpoint],
                       seen: SeenActors | None = None, written: set[tuple] | None = None) -> list[str]:
    """Insert `events`; return `accepted` or `duplicate` for each, in order.

    With `seen`, actor rows it holds are not written again; the actor keys written are added to
    `written`, for the caller to `seen.mark` once the transaction has committed."""
    keys = [(event.scope, event.message_id) for event in events]
    first: dict[tuple[str, str], int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    # In key order, so concurrent transactions wait on each other's keys in one order.
    unique = sorted((events[i] for i in first.values()), key=lambda e: (e.scope, e.message_id))
    inserted = set(await insert_ignore(tx, "analytics_events", EVENT_COLUMNS, map(event_row, unique),
                                       returning=("sender_scope", "message_id")))
    accepted = [first[key] == i and key in inserted for i, key in enumerate(keys)]
    await link_anonymous_ids(tx, [e for e, new in zip(events, accepted) if new])
    await update_rollups(tx, [e for e, new in zip(events, accepted) if new and not e.is_bot],
                         endpoints, seen, written)
    return ["accepted" if new else "duplicate" for new in accepted]


async def link_anonymous_ids(tx: Transaction, events: Sequence[Event]) -> None:
    """Link each anonymous id a new event carries with a user id to that user, unless it is linked
    already (to them or to anyone else: the first link stays). In a batch the first event wins."""
    links: dict[str, tuple[str, float]] = {}
    for event in events:
        if event.user_id and event.anonymous_id:
            links.setdefault(event.anonymous_id, (event.user_id, event.received_at))
    if links:
        await insert_ignore(tx, "analytics_anonymous_links", ("anonymous_id", "user_id", "linked_at"),
                            sorted((anonymous_id, *link) for anonymous_id, link in links.items()))


async def update_rollups(tx: Transaction, events: Sequence[Event], endpoints: Mapping[str, AnalyticsEndpoint],
                         seen: SeenActors | None = None, written: set[tuple] | None = None) -> None:
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
    if seen is not None:
        actors = {key for key in actors if key not in seen}
    if written is not None:
        written.update(actors)
    await insert_ignore(tx, "analytics_actors", ("granularity", "bucket", "event", "actor"), sorted(actors))
    by_endpoint: dict[str, list[Event]] = {}
    for event in events:
        by_endpoint.setdefault(event.endpoint, []).append(event)
    for name in sorted(by_endpoint):
        endpoint = endpoints.get(name)
        if endpoint is not None and endpoint.rollup is not None:
            await endpoint.rollup(tx, by_endpoint[name])
    # Last: every transaction updates the same few '*' rows, so hold their row locks the shortest.
    await upsert_sum(tx, "analytics_counts", ("granularity", "bucket", "event"), ("n",),
                     {key: (n,) for key, n in counts.items()})


async def linked_anonymous_ids(tx: Transaction, user_id: str) -> list[str]:
    """The anonymous ids linked to `user_id` (analytics_anonymous_links), sorted."""
    rows = await tx.fetchall(
        "SELECT anonymous_id FROM analytics_anonymous_links WHERE user_id = %s ORDER BY anonymous_id", (user_id,))
    return [r["anonymous_id"] for r in rows]


def where_user(anonymous_ids: Sequence[str]) -> tuple[str, list[str]]:
    """The condition for a user's events (its first `%s` is the user id), with the anonymous events
    of `anonymous_ids`, and the parameters that follow the user id."""
    if not anonymous_ids:
        return "user_id = %s", []
    marks = ", ".join(["%s"] * len(anonymous_ids))
    return f"(user_id = %s OR (user_id IS NULL AND anonymous_id IN ({marks})))", list(anonymous_ids)


async def forget_user(db: Database, user_id: str) -> dict[str, int]:
    """Erase a user's events (and those of the anonymous ids linked to them, and the links) and
    their distinct-actor share; the anonymous totals (counts, page views, revenue) stay. Recorded
    in analytics_erasures."""
    async with db.transaction() as tx:
        anonymous_ids = await linked_anonymous_ids(tx, user_id)
        where, extra = where_user(anonymous_ids)
        events = await tx.execute(f"DELETE FROM analytics_events WHERE {where}", [user_id, *extra])
        actor_list = [user_id, *(f"anon:{a}" for a in anonymous_ids)]
        marks = ", ".join(["%s"] * len(actor_list))
        actors = await tx.execute(f"DELETE FROM analytics_actors WHERE actor IN ({marks})", actor_list)
        await tx.execute("DELETE FROM analytics_anonymous_links WHERE user_id = %s", (user_id,))
        await tx.execute(
            "INSERT INTO analytics_erasures (user_hash, events_deleted, erased_at) VALUES (%s, %s, %s)",
            (hashlib.sha256(user_id.encode()).hexdigest(), events, time.time()),
        )
    return {"events_deleted": events, "actor_rows_deleted": actors, "anonymous_ids": len(anonymous_ids)}


async def export_user(db: Database, user_id: str, start: float | None = None,
                      end: float | None = None, *, linked: bool = True) -> list[dict[str, Any]]:
    """The stored events of a user in [start, end), oldest first. `linked` (the admin view, and the
    CLI's): with those of the anonymous ids linked to them; else (the user's own view) only the
    events sent with their user id."""
    async with db.transaction() as tx:
        anonymous_ids = await linked_anonymous_ids(tx, user_id) if linked else []
        where, extra = where_user(anonymous_ids)
        return await tx.fetchall(
            f"SELECT * FROM analytics_events WHERE {where} AND ts >= %s AND ts < %s ORDER BY ts, id",
            [user_id, *extra, -1.0 if start is None else start, 1e12 if end is None else end],
        )


async def delete_expired(db: Database, retention_days: int, *, chunk: int = 5000) -> int:
    """Delete raw events received more than `retention_days` ago, a chunk per transaction, then
    the links older than that whose anonymous id has no event left."""
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
            break
    async with db.transaction() as tx:
        await tx.execute(
            "DELETE FROM analytics_anonymous_links WHERE linked_at < %s AND NOT EXISTS "
            "(SELECT 1 FROM analytics_events e WHERE e.anonymous_id = analytics_anonymous_links.anonymous_id)",
            (cutoff,))
    return total
