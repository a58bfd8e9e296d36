"""Processes stored Stripe events: the only place handlers run.

New events, failed ones whose retry is due, and waiting ones woken by a customer link are all
rows in `stripe_events` with `next_attempt_at <= now`. The dispatcher claims a batch of them
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances share the work), and runs each
event's handler in a savepoint of the batch's transaction together with the update of the
event's status: the effects and the status commit together, exactly once.

A failing handler rolls back only its own event, which is marked `failed` with the error and
retried with exponential backoff and full jitter; after STRIPE_MAX_ATTEMPTS it is `dead`. An
event that needs configuration (`ConfigurationNeeded`: a price that maps to no tier) is `failed`
with a note naming the setting and no next attempt: no retry on a timer can fix it, so it waits,
outside the count of attempts, for `events replay --failed` after the operator fixes the setting
(vibe/billing/retries.py).
Since all state is in the table, a restart resumes where the last process stopped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import pluggy

from vibe.billing.batch import BatchReads
from vibe.billing.inbox import (
    CLAIM_COLUMNS,
    CLAIM_KEYS,
    claim_one,
    defer_status_updates,
    stored_event,
    stored_payloads,
)
from vibe.billing.registry import Handler
from vibe.billing.retries import describe, outcome
from vibe.billing.state import type_rank
from vibe.config import Settings
from vibe.db.database import Database, DatabaseUnavailable, Transaction
from vibe.plugins.context import StripeEventContext
from vibe.web.json_body import load_json
from vibe.web.shutdown import wait_event

log = logging.getLogger(__name__)

DUE_STATUSES = ("pending", "failed", "waiting")
BODIES_KEPT = 2000  # parsed bodies waiting to be claimed: about 13 KB each for a 3 KB event
# Events a batch claims. A batch's fixed costs (the claim, its reads, the merged writes, COMMIT)
# spread over more events; at 50 the dispatcher fell behind the door under wrk (processed 11-12%
# of the bare handler, 100: 12.5-13%, p99 alike since a batch's writes are built in slices).
BATCH_SIZE = 100


class Dispatcher:
    def __init__(self, db: Database, pm: pluggy.PluginManager, handlers: dict[str, Handler],
                 settings: Settings, *, batch_size: int = BATCH_SIZE):
        self.db = db
        self.pm = pm
        self.handlers = handlers
        self.settings = settings
        self.batch_size = batch_size
        self._stopping = False
        # Waking: a loop that is awake (`_working`) looks again before it sleeps when `_news`
        # came meanwhile; with none awake, one sleeping loop (each waits on its own event) looks.
        self._news, self._working, self._asleep = False, 0, []
        # event id -> body parsed at the door, until claimed (ordered: the oldest leaves in O(1)):
        # a batch claims ids only and reads the stored bodies of the others (vibe/billing/inbox.py)
        self._bodies: collections.OrderedDict[str, dict] = collections.OrderedDict()
        # Since start, in this process: events that ended `processed`, and events run (attempts,
        # whatever their outcome) and how many of those failed (transient or configuration).
        self.processed, self.attempts, self.failed_attempts = 0, 0, 0
        # Batches whose transaction failed as a whole, in a row (0 once one commits or nothing
        # is due), and the last error: past a threshold the health probe says it is failing.
        self.failed_batches, self.last_error, self.last_error_at = 0, None, None

    def _batch_failed(self, exc: BaseException) -> None:
        self.failed_batches += 1
        self.last_error = describe(exc)
        self.last_error_at = time.time()

    def wake(self, body: dict | None = None) -> None:
        """New work was stored: look now rather than at the next poll (one loop, not every one:
        they would all look for one batch; a full batch wakes another, see `_batch`). `body`: the
        stored event, parsed, kept until this process claims it (the last BODIES_KEPT, at most:
        a backlog under load grows by a few hundred a second)."""
        if body is not None:
            self._bodies[body["id"]] = body
            if len(self._bodies) > BODIES_KEPT:  # claimed by another instance, say
                self._bodies.popitem(last=False)  # a dict's next(iter()) walks its deleted slots
        self._news = True
        if not self._working:
            self._rouse()

    def _rouse(self) -> None:
        if self._asleep:
            self._asleep.pop().set()

    async def run(self) -> None:
        """The background loop (started and stopped by the app's cleanup context)."""
        failures = 0
        self._working += 1
        while not self._stopping:
            await self._pause(self.settings.billing.poll_seconds)
            try:
                probe = True
                while not self._stopping:
                    self._news = False
                    if not await self.process_due(probe=probe):
                        break
                    probe = False  # there was work: look for more at once
                failures = 0
            except DatabaseUnavailable as exc:  # the database's alert, not the batches' (see the probe)
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("dispatcher: database unavailable (%s); next try in %.1fs", exc, delay)
                await self._pause(delay)
            except Exception as exc:
                self._batch_failed(exc)
                log.exception("dispatcher: unexpected error; continuing")
                await self._pause(1.0)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless new work (a stored event: the database is back) came or wakes us first."""
        if self._news or self._stopping:
            return
        woken = asyncio.Event()
        self._asleep.append(woken)
        self._working -= 1
        try:
            await wait_event(woken, seconds)
        finally:
            self._working += 1
            if woken in self._asleep:
                self._asleep.remove(woken)

    def stop(self) -> None:
        self._stopping = True
        for woken in self._asleep:
            woken.set()

    async def process_due(self, limit: int | None = None, *, probe: bool = True) -> int:
        """Claim and process one batch of due events; return how many were claimed.

        Each event runs in a savepoint of its own, so one event's trouble (a failure; stale,
        waiting) never touches another's effects; a savepoint costs nothing while its event makes
        no round trip (vibe.db.database). Should the batch's transaction fail all the same, its
        events run again one transaction each (`_one_by_one`): none holds back the others.
        """
        now = time.time()
        # A plain read first (`probe`, unless the last batch found work): an idle poll takes no
        # write lock (SQLite) and opens no transaction.
        if probe and not await self.db.fetchval(
            "SELECT 1 FROM stripe_events WHERE status IN ('pending', 'failed', 'waiting') "
            "AND next_attempt_at <= %s LIMIT 1", (now,)
        ):
            self.failed_batches = 0  # nothing due: nothing is failing
            return 0
        claimed: list[str] = []
        try:
            return await self._batch(now, limit, claimed)
        except Exception as exc:
            if not claimed or isinstance(exc, DatabaseUnavailable):
                raise
            self._batch_failed(exc)
            log.error("dispatcher: a batch of %d event(s) failed as a whole (%s); running them one by one",
                      len(claimed), self.last_error)
            await self._one_by_one(claimed)
            return len(claimed)

    async def _batch(self, now: float, limit: int | None, claimed: list[str]) -> int:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT {CLAIM_KEYS} FROM stripe_events "
                "WHERE status IN ('pending', 'failed', 'waiting') AND next_attempt_at <= %s "
                "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit or self.batch_size),
            )
            if not rows:
                return 0
            claimed.extend(row["id"] for row in rows)
            if len(rows) >= (limit or self.batch_size):
                self._rouse()  # more may be due: another loop takes the next batch meanwhile
            rows.sort(key=lambda r: (int(r["created"]), type_rank(r["type"]), r["received_at"]))
            events = [self._bodies.pop(row["id"], None) for row in rows]
            if missing := [row for row, event in zip(rows, events) if event is None]:
                payloads = await stored_payloads(tx, [row["id"] for row in missing])
                for row in missing:
                    row["payload"] = payloads[row["id"]]
                events = [event or stored_event(row) for row, event in zip(rows, events)]
            # What the events would each read (versions, linked profiles), read once for all.
            batch = await BatchReads.read(tx, [e for e in events if e is not None]) if len(rows) > 1 else None
            customers: set[str] = set()
            updates = []
            for row, event in zip(rows, events):
                updates.append(await self._run(tx, row, customers, event=event, batch=batch))
                if len(updates) % 4 == 0:
                    await asyncio.sleep(0)  # events that make no round trip never yield: let requests in
            # What the events gathered, written once after all of them: a write per event would
            # take the shared rollup rows' locks early and hold them while the next event waits
            # on rows another transaction holds (a deadlock). Building the batch's writes is a
            # few milliseconds of Python each time (the analytics rows, the rollups, COMMIT's
            # deferred statements): a yield before each keeps requests from waiting behind two of
            # them in one stretch (bench/loop_probe).
            await asyncio.sleep(0)
            await tx.flush_collected()
            await asyncio.sleep(0)
            defer_status_updates(tx, updates)
        self.failed_batches = 0
        self._count(updates)
        await self._wake_linked(customers)
        return len(rows)

    async def _one_by_one(self, event_ids: list[str]) -> None:
        """Each event of a failed batch in a transaction of its own; one whose own transaction
        fails too is recorded as a failed attempt (retried, then dead) in yet another."""
        for event_id in event_ids:
            customers: set[str] = set()
            updates: list[tuple] = []
            try:
                async with self.db.transaction() as tx:
                    if (row := await claim_one(tx, event_id)) is None:
                        continue
                    updates = [await self._run(tx, row, customers)]
                    defer_status_updates(tx, updates)
            except DatabaseUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded (and logged) as the event's failed attempt
                async with self.db.transaction() as tx:
                    if (row := await claim_one(tx, event_id)) is None:
                        continue
                    now = time.time()
                    ended = outcome(self.settings.billing, exc, row, now, int(row["attempts"]))  # status, note, error, next, waiting, n
                    cause = updates[0][4] if updates else None  # what failed first, not the COMMIT after it
                    updates = [(ended[0], ended[5], *ended[3:5], cause or ended[2], ended[1], now, event_id)]
                    self.last_error = f"event {event_id} fails its own transaction: {cause or ended[2]}"
                    defer_status_updates(tx, updates)
            self._count(updates)
            await self._wake_linked(customers)

    def _count(self, updates: list[tuple]) -> None:
        """After COMMIT: what the committed status updates (`_UPDATE`'s parameters) say."""
        statuses = [update[0] for update in updates]
        self.attempts += len(statuses)
        self.processed += statuses.count("processed")
        self.failed_attempts += sum(s in ("failed", "dead") for s in statuses)

    async def _wake_linked(self, customers: set[str]) -> None:
        """After COMMIT: events waiting for a customer that is now linked become due.

        Done after commit by both sides, the transaction that linked a customer and the one that
        parked an event for it, so that whichever commits last sees the other's work: no wake-up
        is lost between concurrent batches or instances.
        """
        if not customers:
            return
        marks = ", ".join(["%s"] * len(customers))
        woken = await self.db.execute(
            "UPDATE stripe_events SET status = 'pending', next_attempt_at = %s, waiting_for = NULL "
            f"WHERE status = 'waiting' AND waiting_for IN ({marks}) "
            f"AND waiting_for IN (SELECT customer_id FROM stripe_customers WHERE customer_id IN ({marks}))",
            (time.time(), *customers, *customers),
        )
        if woken:
            self.wake()

    async def process_ids(self, event_ids: list[str]) -> list[dict[str, Any]]:
        """Process the named events now, whatever their status (replay); return their rows."""
        out = []
        for event_id in event_ids:
            async with self.db.transaction() as tx:
                row = await tx.fetchone(f"SELECT {CLAIM_COLUMNS} FROM stripe_events WHERE id = %s FOR UPDATE",
                                        (event_id,))
                if row is None:
                    continue
                row["attempts"] = 0  # a replay gets a fresh set of attempts
                customers: set[str] = set()
                updates = [await self._run(tx, row, customers)]
                defer_status_updates(tx, updates)
            self._count(updates)
            await self._wake_linked(customers)
            out.append(await self.db.fetchone("SELECT * FROM stripe_events WHERE id = %s", (event_id,)))
        return out

    async def _run(self, tx: Transaction, row: dict[str, Any], customers: set[str], *,
                   event: dict | None = None, batch: BatchReads | None = None) -> tuple:
        """Run the event's handler in a savepoint; return its status update's parameters. Customers
        it linked or waits for go into `customers`. A stored body that does not parse (or nests
        too deep: vibe.web.json_body) fails like a handler would. `event`: the body, if parsed
        already; `batch`: what the batch read for its events (vibe.billing.batch)."""
        handler = self.handlers.get(row["type"])
        now = time.time()
        status, note, error, next_at, waiting_for = "processed", None, None, None, None
        attempts = int(row["attempts"])
        ctx = None
        try:
            event = event if event is not None else load_json(row["payload"], "The stored event")
            ctx = StripeEventContext(tx=tx, settings=self.settings, pm=self.pm, now=now, event=event, batch=batch)
            if batch is not None:
                batch.begin(ctx)
            async with tx.savepoint():
                if handler is None:
                    status, note = "ignored", "no handler for this event type"
                else:
                    note = await handler(ctx)
                await ctx.announce("stripe_event_processed", event=event, outcome=status)
            customers |= ctx.linked_customers
            if batch is not None:
                batch.end(ctx, ok=True)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if batch is not None and ctx is not None:
                batch.end(ctx, ok=False)
            status, note, error, next_at, waiting_for, attempts = outcome(self.settings.billing, exc, row, now, attempts)
            if waiting_for:
                customers.add(waiting_for)
        return (status, attempts, next_at, waiting_for, error,
                None if note is None else str(note)[:2000], now, row["id"])
