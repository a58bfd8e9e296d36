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
outside the count of attempts, for `events replay --failed` after the operator fixes the setting.
Since all state is in the table, a restart resumes where the last process stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from typing import Any

import pluggy

from vibe.billing.inbox import CLAIM_COLUMNS, claim_one, defer_status_updates
from vibe.billing.outcomes import EventOutcome, WaitForCustomer
from vibe.billing.registry import Handler
from vibe.billing.state import ConfigurationNeeded, type_rank
from vibe.config import Settings
from vibe.db.database import Database, DatabaseUnavailable, Transaction
from vibe.plugins.context import StripeEventContext
from vibe.web.errors import ApiError
from vibe.web.json_body import load_json
from vibe.web.shutdown import wait_event

log = logging.getLogger(__name__)

DUE_STATUSES = ("pending", "failed", "waiting")
NEEDS_CONFIGURATION = "needs configuration"  # how the note of such an event starts


class Dispatcher:
    def __init__(self, db: Database, pm: pluggy.PluginManager, handlers: dict[str, Handler],
                 settings: Settings, *, batch_size: int = 50):
        self.db = db
        self.pm = pm
        self.handlers = handlers
        self.settings = settings
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = False
        # Since start, in this process: events that ended `processed`, and events run (attempts,
        # whatever their outcome) and how many of those failed (transient or configuration).
        self.processed, self.attempts, self.failed_attempts = 0, 0, 0
        # Batches whose transaction failed as a whole, in a row (0 once one commits or nothing
        # is due), and the last error: past a threshold the health probe says it is failing.
        self.failed_batches, self.last_error, self.last_error_at = 0, None, None

    def _batch_failed(self, exc: BaseException) -> None:
        self.failed_batches += 1
        self.last_error = _describe(exc)
        self.last_error_at = time.time()

    def wake(self) -> None:
        """New work was stored: look now rather than at the next poll."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Full-jitter exponential backoff for the `attempts`-th failure."""
        cap = min(self.settings.billing.retry_max_seconds,
                  self.settings.billing.retry_base_seconds * 2 ** (attempts - 1))
        return random.uniform(cap / 2, cap)

    async def run(self) -> None:
        """The background loop (started and stopped by the app's cleanup context)."""
        failures = 0
        while not self._stopping:
            await self._pause(self.settings.billing.poll_seconds)
            self._wake.clear()
            try:
                while not self._stopping and await self.process_due():
                    pass
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
        """Sleep, unless new work (a stored event: the database is back) wakes us first."""
        await wait_event(self._wake, seconds)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def process_due(self, limit: int | None = None) -> int:
        """Claim and process one batch of due events; return how many were claimed.

        Fast path: the whole batch runs under one savepoint. If any handler raises (a failure,
        or an outcome such as stale or waiting), the batch rolls back to it and runs again with
        a savepoint per event, so one event's trouble never touches another's effects. Should
        the batch's transaction fail all the same (whatever aborts it), its events run again
        one transaction each (`_one_by_one`): one event can never hold back the others.
        """
        now = time.time()
        # A plain read first: an idle poll takes no write lock (SQLite) and opens no transaction.
        if not await self.db.fetchval(
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
                f"SELECT {CLAIM_COLUMNS} FROM stripe_events "
                "WHERE status IN ('pending', 'failed', 'waiting') AND next_attempt_at <= %s "
                "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit or self.batch_size),
            )
            if not rows:
                return 0
            claimed.extend(row["id"] for row in rows)
            rows.sort(key=lambda r: (int(r["created"]), type_rank(r["type"]), r["received_at"]))
            customers: set[str] = set()
            try:
                async with tx.savepoint():
                    updates = [await self._run(tx, row, customers, isolated=False) for row in rows]
                    try:
                        await tx.flush_collected()  # what the batch gathered, inside its savepoint
                    except DatabaseUnavailable:
                        raise
                    except Exception as exc:
                        raise _RunIsolated from exc
            except _RunIsolated:
                updates = [await self._run(tx, row, customers, isolated=True) for row in rows]
                # What the surviving events gathered, written once after all of them: a write
                # per event would take the shared rollup rows' locks early and hold them while
                # the next event waits on rows another transaction holds (a deadlock).
                await tx.flush_collected()
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
                    updates = [await self._run(tx, row, customers, isolated=True)]
                    defer_status_updates(tx, updates)
            except DatabaseUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded (and logged) as the event's failed attempt
                async with self.db.transaction() as tx:
                    if (row := await claim_one(tx, event_id)) is None:
                        continue
                    now = time.time()
                    outcome = self._outcome(exc, row, now, int(row["attempts"]))  # status, note, error, next, waiting, n
                    cause = updates[0][4] if updates else None  # what failed first, not the COMMIT after it
                    updates = [(outcome[0], outcome[5], *outcome[3:5], cause or outcome[2], outcome[1], now, event_id)]
                    self.last_error = f"event {event_id} fails its own transaction: {cause or outcome[2]}"
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
                updates = [await self._run(tx, row, customers, isolated=True)]
                defer_status_updates(tx, updates)
            self._count(updates)
            await self._wake_linked(customers)
            out.append(await self.db.fetchone("SELECT * FROM stripe_events WHERE id = %s", (event_id,)))
        return out

    async def _run(self, tx: Transaction, row: dict[str, Any], customers: set[str], *, isolated: bool) -> tuple:
        """Run the event's handler; return the parameters of its status update (`_UPDATE`).
        Customers it linked or waits for are added to `customers`. A stored body that does not
        parse (or nests deeper than vibe.web.json_body allows) fails like a handler would."""
        handler = self.handlers.get(row["type"])
        now = time.time()
        status, note, error, next_at, waiting_for = "processed", None, None, None, None
        attempts = int(row["attempts"])
        try:
            event = load_json(row["payload"], "The stored event")
            ctx = StripeEventContext(tx=tx, settings=self.settings, pm=self.pm, now=now, event=event)
            async with tx.savepoint() if isolated else contextlib.nullcontext():
                if handler is None:
                    status, note = "ignored", "no handler for this event type"
                else:
                    note = await handler(ctx)
                await ctx.announce("stripe_event_processed", event=event, outcome=status)
            customers |= ctx.linked_customers
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if not isolated:
                raise _RunIsolated from exc
            status, note, error, next_at, waiting_for, attempts = self._outcome(exc, row, now, attempts)
            if waiting_for:
                customers.add(waiting_for)
        return (status, attempts, next_at, waiting_for, error,
                None if note is None else str(note)[:2000], now, row["id"])

    def _outcome(self, exc: Exception, row: dict[str, Any], now: float, attempts: int) -> tuple:
        """status, note, error, next_attempt_at, waiting_for, attempts after `exc`."""
        if isinstance(exc, WaitForCustomer):
            age = now - float(row["received_at"])
            if age > self.settings.billing.wait_timeout_seconds:
                return "dead", str(exc), f"gave up: {exc}", None, exc.customer_id, attempts
            # Woken by the link (see _wake_linked); rechecked now and then all the same.
            recheck = min(60.0, max(1.0, age), self.settings.billing.retry_max_seconds)
            return "waiting", str(exc), None, now + recheck, exc.customer_id, attempts
        if isinstance(exc, EventOutcome):
            return exc.status, str(exc) or None, None, None, None, attempts
        error = _describe(exc)
        if isinstance(exc, ConfigurationNeeded):  # no retry can fix it: no next attempt, no count
            note = f"{NEEDS_CONFIGURATION} ({exc.setting}): {exc} (then: python run.py events replay --failed)"
            log.error("stripe event %s (%s) %s", row["id"], row["type"], note)
            return "failed", note, error, None, None, attempts
        attempts += 1  # the handler failed: retry later, from the stored row
        if attempts >= self.settings.billing.max_attempts:
            log.error("stripe event %s (%s) dead after %d attempts: %s", row["id"], row["type"], attempts, error)
            return "dead", None, error, None, None, attempts
        log.warning("stripe event %s (%s) failed (attempt %d): %s", row["id"], row["type"], attempts, error)
        return "failed", None, error, now + self.backoff(attempts), None, attempts


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.message}"[:2000]
    return "".join(traceback.format_exception_only(exc)).strip()[:2000]


class _RunIsolated(Exception):
    """A handler raised on the batch's fast path: run the batch again, one savepoint per event."""
