"""Analytics background work, in one loop that stops cleanly on shutdown:

* retention: delete raw events older than ANALYTICS_RETENTION_DAYS (the rollups stay);
* PostgreSQL: refresh the business materialized views every ANALYTICS_REFRESH_SECONDS;
* erasures: when any instance (or `run.py analytics forget`) erased a user, drop the query cache.

A failing job is logged with its traceback and tried again at its next turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from vibe.analytics.keys import ANALYTICS
from vibe.analytics.queries import refresh_business_views
from vibe.analytics.store import delete_expired
from vibe.db.database import Database, DatabaseUnavailable
from vibe.keys import DB, SETTINGS, SHUTDOWN
from vibe.web.shutdown import wait_event

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], Awaitable[None]]]


class ErasureWatch:
    """Remembers the newest erasure seen; calls `on_new` when another one was recorded."""

    def __init__(self, db: Database, on_new: Callable[[], None]):
        self.db = db
        self.on_new = on_new
        self.seen: int | None = None

    async def check(self) -> None:
        newest = int(await self.db.fetchval("SELECT COALESCE(MAX(id), 0) FROM analytics_erasures") or 0)
        if self.seen is not None and newest != self.seen:
            self.on_new()
        self.seen = newest


async def run_jobs(jobs: list[Job], stop: asyncio.Event) -> None:
    due = {name: time.monotonic() for name, _, _ in jobs}
    while not stop.is_set():
        now = time.monotonic()
        for name, interval, job in jobs:
            if due[name] <= now:
                try:
                    await job()
                except DatabaseUnavailable as exc:
                    log.warning("analytics job %s: database unavailable (%s); it runs again in %.0fs",
                                name, exc, interval)
                except Exception:
                    log.exception("analytics job %s failed; it runs again in %.0fs", name, interval)
                due[name] = time.monotonic() + interval
        wait = max(0.0, min(due.values()) - time.monotonic())
        await wait_event(stop, wait)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, db, state = app[SETTINGS], app[DB], app[ANALYTICS]
    watch = ErasureWatch(db, state.clear_cache)
    await watch.check()

    async def retention() -> None:
        deleted = await delete_expired(db, settings.analytics.retention_days)
        if deleted:
            log.info("analytics retention: deleted %d events older than %d days",
                     deleted, settings.analytics.retention_days)

    async def refresh() -> None:
        await refresh_business_views(db)
        state.invalidate("business")

    jobs: list[Job] = [("erasures", settings.analytics.erasure_poll_seconds, watch.check)]
    if settings.analytics.retention_days:
        jobs.append(("retention", settings.analytics.retention_interval, retention))
    if db.dialect == "postgresql":
        jobs.append(("refresh", settings.analytics.refresh_seconds, refresh))
    stop = asyncio.Event()
    task = asyncio.create_task(run_jobs(jobs, stop), name="analytics-jobs")
    try:
        yield
    finally:
        stop.set()
        await app[SHUTDOWN].stop("analytics jobs", [task])
