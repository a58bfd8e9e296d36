"""Billing's wiring: `setup(app)` collects the Stripe handlers, adds the webhook route, opens the
Stripe API client (when a key is set), the inbox's group committer and the dispatcher's loops,
and the catch-up loop (a `cleanup_ctx` each), and registers the `stripe-webhook` health probe."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from vibe.billing import checkout, webhook
from vibe.billing.catchup import CatchUp
from vibe.billing.dispatcher import Dispatcher
from vibe.billing.inbox import store_events
from vibe.billing.keys import CATCHUP, DISPATCHER, STRIPE_API, STRIPE_HANDLERS, STRIPE_INBOX
from vibe.billing.registry import collect_stripe_handlers
from vibe.billing.retries import NEEDS_CONFIGURATION
from vibe.billing.stripe_api import disabled_reason, stripe_api_ctx
from vibe.db.groupcommit import GroupCommitter
from vibe.keys import DB, PLUGINS, SETTINGS, SHUTDOWN
from vibe.ops import health

_SETTING = re.compile(re.escape(NEEDS_CONFIGURATION) + r" \(([A-Z0-9_]+)\)")


async def stripe_ctx(app: web.Application) -> AsyncIterator[None]:
    """The inbox's group committer and the dispatcher's background loop."""
    settings = app[SETTINGS]
    app[STRIPE_INBOX] = GroupCommitter(
        app[DB], store_events, max_batch=100, concurrency=2 if settings.db.dialect == "postgresql" else 1,
        name="stripe-inbox", one_statement=True,  # store_events: one INSERT ... ON CONFLICT DO NOTHING
    )
    dispatcher = Dispatcher(app[DB], app[PLUGINS], app[STRIPE_HANDLERS], settings)
    app[DISPATCHER] = dispatcher
    # One loop: a batch costs a few round trips in all (vibe/billing/batch.py), and each more loop
    # made the batches smaller and its claims scan past the rows the others hold (SKIP LOCKED).
    # More loops (PostgreSQL; SQLite has one writer) wake only for a backlog: see Dispatcher.wake.
    loops = settings.billing.dispatch_concurrency or 1
    tasks = [asyncio.create_task(dispatcher.run(), name=f"stripe-dispatcher-{i}")
             for i in range(loops if settings.billing.worker else 0)]
    try:
        yield
    finally:
        shutdown = app[SHUTDOWN]
        await shutdown.stop("stripe inbox", app[STRIPE_INBOX].stop())
        dispatcher.stop()
        await shutdown.stop("stripe dispatcher", tasks)


async def catchup_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background catch-up (vibe/billing/catchup.py): with a key, unless STRIPE_CATCHUP_SECONDS=0."""
    settings = app[SETTINGS]
    if STRIPE_API not in app or not settings.billing.catchup_seconds:
        yield
        return
    catchup = CatchUp(app[DB], settings, app[STRIPE_API], app[STRIPE_HANDLERS], app[DISPATCHER].wake)
    app[CATCHUP] = catchup
    task = asyncio.create_task(catchup.run(), name="stripe-catchup")
    try:
        yield
    finally:
        catchup.stop()
        await app[SHUTDOWN].stop("stripe catch-up", [task])


def stripe_api_state(app: web.Application) -> dict[str, Any]:
    """What /health says of the calls to Stripe: off (and why), or the client's breaker and catch-up."""
    reason = disabled_reason(app[SETTINGS])
    if reason or STRIPE_API not in app:
        return {"enabled": False, "reason": reason or "not started"}
    api = app[STRIPE_API]
    catchup = app[CATCHUP].snapshot() if CATCHUP in app else {"enabled": False,
                                                              "reason": "STRIPE_CATCHUP_SECONDS=0"}
    return {"enabled": True, "api_base": api.base, "breaker": api.breaker.state, "catchup": catchup}


async def stripe_probe(app: web.Application) -> dict[str, Any]:
    """Events by status; degraded by dead events and by events that need configuration (failed
    with no next attempt, see the dispatcher). `processed` counts the events this process took
    to `processed` since it started; `attempts` and `failed_attempts` count its runs of events."""
    rows = await app[DB].fetchall(
        "SELECT status, next_attempt_at IS NULL AS parked, COUNT(*) AS n FROM stripe_events "
        "WHERE status IN ('pending', 'failed', 'waiting', 'dead') GROUP BY status, next_attempt_at IS NULL"
    )
    counts = {"pending": 0, "failed": 0, "waiting": 0, "dead": 0}
    configuration = 0
    for r in rows:
        counts[r["status"]] += int(r["n"])
        if r["status"] == "failed" and r["parked"]:
            configuration += int(r["n"])
    dispatcher = app[DISPATCHER]
    failing = await _failing(app, dispatcher)
    out = {"status": "degraded" if counts["dead"] or configuration or failing else "healthy", "events": counts,
           "processed": dispatcher.processed, "attempts": dispatcher.attempts,
           "failed_attempts": dispatcher.failed_attempts, "needs_configuration": configuration,
           # the events the dispatcher will still take up (not those waiting for the operator)
           "queues": {"stripe_pending": counts["pending"] + counts["failed"] + counts["waiting"] - configuration,
                      "stripe_dead": counts["dead"], "stripe_inbox_batcher": app[STRIPE_INBOX].depth}}
    out["stripe_api"] = stripe_api_state(app)
    out["dispatcher"] = {"failed_batches": dispatcher.failed_batches, "last_error": dispatcher.last_error,
                         "last_error_at": dispatcher.last_error_at}
    errors = []
    if failing:
        out["failing"] = failing  # the watchdog's `failing:stripe-webhook` alert
        errors.append(failing)
    if configuration:
        notes = await app[DB].fetchall(
            "SELECT DISTINCT note FROM stripe_events WHERE status = 'failed' AND next_attempt_at IS NULL LIMIT 20")
        names = sorted({m.group(1) for r in notes if (m := _SETTING.match(r["note"] or ""))})
        errors.append(f"{configuration} {'event needs' if configuration == 1 else 'events need'} configuration"
                      f"{' (' + ', '.join(names) + ')' if names else ''}: python run.py events list "
                      "--status failed, fix the setting, restart, then python run.py events replay --failed")
    if counts["dead"]:
        errors.append(f"{counts['dead']} dead event(s): python run.py events list --status dead")
    if errors:
        out["error"] = "; ".join(errors)
    return out


async def _failing(app: web.Application, dispatcher: Dispatcher) -> str | None:
    """Why the pipeline is stuck, if it is: STRIPE_FAILING_BATCHES batches failed in a row (for a
    reason of their own: an unreachable database is the database's alert), or a due event older
    than STRIPE_DUE_AGE_SECONDS (no one processes, or not fast enough, whatever the reason)."""
    billing, now = app[SETTINGS].billing, time.time()
    oldest = await app[DB].fetchval(
        "SELECT MIN(next_attempt_at) FROM stripe_events WHERE status IN ('pending', 'failed', 'waiting') "
        "AND next_attempt_at <= %s", (now,))
    reasons = []
    if dispatcher.failed_batches >= billing.failing_batches:
        reasons.append(f"the dispatcher's last {dispatcher.failed_batches} batches failed "
                       f"(STRIPE_FAILING_BATCHES={billing.failing_batches}): {dispatcher.last_error}")
    if oldest is not None and now - float(oldest) > billing.due_age_seconds:
        reasons.append(f"the oldest due Stripe event has waited {now - float(oldest):.0f} s "
                       f"(STRIPE_DUE_AGE_SECONDS={billing.due_age_seconds:g})")
    return "; ".join(reasons) or None


def setup(app: web.Application) -> None:
    app[STRIPE_HANDLERS] = collect_stripe_handlers(app[PLUGINS], app[SETTINGS])
    webhook.setup_routes(app)
    checkout.setup_routes(app)
    app.cleanup_ctx.append(stripe_api_ctx)
    app.cleanup_ctx.append(stripe_ctx)
    app.cleanup_ctx.append(catchup_ctx)
    health.register(app, "stripe-webhook", stripe_probe)
