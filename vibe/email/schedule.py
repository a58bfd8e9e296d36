"""Scheduled mail: the weekly progress report and the subscription-expiring reminder.

One pass queues what is due now. Each message's idempotency key names its period
(`weekly_progress:USER:2026-W48`, `subscription_expiring:USER:PERIOD_END`), so passes may run as
often as wanted, from as many instances as there are: each report is queued once. On PostgreSQL
a transaction-level advisory lock also keeps two instances from doing the same pass at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Mapping

from vibe.config import Settings
from vibe.db.database import Database, DatabaseUnavailable
from vibe.email.queue import EmailRejected, enqueue
from vibe.email.templates import EmailTemplate, allows_http
from vibe.web.shutdown import wait_event

log = logging.getLogger(__name__)

_LOCK_ID = 0x76696265 + 5  # "vibe" + issue 5
BATCH = 500
ACTIVE_STATUSES = ("active", "trialing", "past_due")


def iso_week(now: float) -> str:
    year, week, _ = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


async def _queue_batch(db: Database, templates: Mapping[str, EmailTemplate], settings: Settings,
                       items: list[tuple[str, str, dict, str]], now: float) -> int:
    """Queue (user_id, type, data, key) items in one transaction; return how many are new."""
    created = 0
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        for user_id, kind, data, key in items:
            try:
                async with tx.savepoint():
                    _, new = await enqueue(tx, templates, user_id=user_id, type=kind, data=data,
                                           idempotency_key=key, sender=settings.email.sender, now=now,
                                           http=allows_http(settings))
                    created += new
            except EmailRejected as exc:
                log.warning("scheduled %s for %s not queued: %s", kind, user_id, exc.message)
    return created


async def weekly_candidates(db: Database, week_key: str, now: float) -> list[str]:
    """Active learners (paying, or progress recorded in the last four weeks) without this week's report."""
    rows = await db.fetchall(
        "SELECT p.id FROM profiles p WHERE p.email IS NOT NULL AND p.role = 'user' "
        "AND (p.subscription_status IN ('active', 'trialing', 'past_due') OR EXISTS ("
        "  SELECT 1 FROM user_progress a WHERE a.user_id = p.id AND a.updated_at >= %s)) "
        "AND NOT EXISTS (SELECT 1 FROM email_messages m WHERE m.idempotency_key = "
        "  'weekly_progress:' || p.id || ':' || %s) ORDER BY p.id",
        (now - 28 * 86400, week_key),
    )
    return [r["id"] for r in rows]


async def expiring_candidates(db: Database, settings: Settings, now: float) -> list[dict]:
    return await db.fetchall(
        "SELECT id, tier, current_period_end FROM profiles WHERE email IS NOT NULL AND cancel_at_period_end "
        "AND subscription_status IN ('active', 'trialing') AND current_period_end > %s AND current_period_end <= %s",
        (now, now + settings.email.expiring_days * 86400),
    )


async def run_schedule(db: Database, templates: Mapping[str, EmailTemplate], settings: Settings,
                       now: float | None = None) -> dict[str, int]:
    """One pass: queue every scheduled message that is due; return how many were queued per type."""
    now = time.time() if now is None else now
    counts = {"weekly_progress": 0, "subscription_expiring": 0}
    if "weekly_progress" in templates:
        week = iso_week(now)
        users = await weekly_candidates(db, week, now)
        for start in range(0, len(users), BATCH):
            items = [(u, "weekly_progress", {}, f"weekly_progress:{u}:{week}") for u in users[start:start + BATCH]]
            counts["weekly_progress"] += await _queue_batch(db, templates, settings, items, now)
    if "subscription_expiring" in templates:
        items = [(r["id"], "subscription_expiring", {"period_end": int(r["current_period_end"]), "tier": r["tier"]},
                  f"subscription_expiring:{r['id']}:{int(r['current_period_end'])}")
                 for r in await expiring_candidates(db, settings, now)]
        if items:
            counts["subscription_expiring"] += await _queue_batch(db, templates, settings, items, now)
    return counts


class EmailScheduler:
    """Runs a pass at start-up and every EMAIL_SCHEDULE_SECONDS until stopped."""

    def __init__(self, db: Database, templates: Mapping[str, EmailTemplate], settings: Settings, on_queued=None):
        self.db, self.templates, self.settings = db, templates, settings
        self.on_queued = on_queued
        self._stop = asyncio.Event()
        self.passes = 0
        self.last_run: float | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                counts = await run_schedule(self.db, self.templates, self.settings)
                self.passes += 1
                self.last_run = time.time()
                if any(counts.values()):
                    log.info("email schedule queued %s", counts)
                    if self.on_queued:
                        self.on_queued()
            except DatabaseUnavailable as exc:
                log.warning("email schedule: database unavailable (%s)", exc)
            except Exception:
                log.exception("email schedule: pass failed; next pass as scheduled")
            await wait_event(self._stop, self.settings.email.schedule_seconds)
