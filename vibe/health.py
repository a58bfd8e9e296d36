"""`GET /health`: is the service able to do its job, and what is waiting."""

from __future__ import annotations

import time

from aiohttp import web

from . import __version__
from .database import DatabaseUnavailable
from .keys import DB, DISPATCHER, STARTED_AT, STRIPE_INBOX


async def stripe_queue(db) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT status, COUNT(*) AS n FROM stripe_events "
        "WHERE status IN ('pending', 'failed', 'waiting', 'dead') GROUP BY status"
    )
    counts = {"pending": 0, "failed": 0, "waiting": 0, "dead": 0}
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


async def health(request: web.Request) -> web.Response:
    app = request.app
    db = app[DB]
    body: dict = {
        "status": "healthy",
        "version": __version__,
        "uptime_seconds": round(time.time() - app[STARTED_AT], 1),
        "database": {"dialect": db.dialect, "reachable": True},
        "pool": db.pool_state(),
    }
    try:
        body["database"]["round_trip_ms"] = round(await db.ping() * 1000, 2)
        body["stripe_events"] = await stripe_queue(db)
    except DatabaseUnavailable as exc:
        body["status"] = "unhealthy"
        body["database"].update(reachable=False, error=str(exc))
    body["stripe_events_batcher_depth"] = app[STRIPE_INBOX].depth
    body["stripe_events_processed"] = app[DISPATCHER].processed
    return web.json_response(body, status=200 if body["status"] != "unhealthy" else 503)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
