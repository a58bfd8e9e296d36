"""The email function assembled: `setup(app)` adds its state, resources and routes.

Resources, each one cleanup_ctx generator: the queueing group committer; the worker (with its
sender and circuit breaker), which drains in-flight sends on shutdown; the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from vibe.db.groupcommit import GroupCommitter
from vibe.email import api as email_api
from vibe.email import unsubscribe
from vibe.email.intake import aliases
from vibe.email.keys import (
    EMAIL_PAGES,
    EMAIL_QUEUE,
    EMAIL_RENDERER,
    EMAIL_SCHEDULER,
    EMAIL_UNSUBSCRIBE,
    EMAIL_WORKER,
)
from vibe.email.schedule import EmailScheduler
from vibe.email.senders import create_sender
from vibe.email.templates import EmailRenderer, allows_http, collect_templates
from vibe.email.worker import EmailWorker
from vibe.keys import DB, HTTP_SESSION, PLUGINS, SETTINGS, SHUTDOWN
from vibe.ops import health
from vibe.ops.keys import BREAKERS
from vibe.ops.resilience import BreakerRegistry
from vibe.paths import TEMPLATES_DIR

log = logging.getLogger(__name__)


async def queue_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[EMAIL_QUEUE] = GroupCommitter(
        app[DB], email_api.make_flush(app[EMAIL_RENDERER].templates, settings.email.sender,
                                      allows_http(settings), settings.ops.admin_email), max_batch=200,
        concurrency=4 if settings.db.dialect == "postgresql" else 1, name="email-queue",
    )
    try:
        yield
    finally:
        await app[SHUTDOWN].stop("email queue batcher", app[EMAIL_QUEUE].stop())


async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    sender = create_sender(settings, lambda: app[HTTP_SESSION])
    breaker = app[BREAKERS].get(f"email:{sender.name}", failure_threshold=settings.email.breaker_threshold,
                                reset_timeout=settings.email.breaker_reset_seconds)
    worker = EmailWorker(app[DB], settings, app[EMAIL_RENDERER], sender, breaker, app[EMAIL_UNSUBSCRIBE])
    app[EMAIL_WORKER] = worker
    task = asyncio.create_task(worker.run(), name="email-worker") if settings.email.worker else None
    try:
        yield
    finally:
        worker.stop()
        # sends cut short past the grace are sent again once their lease runs out
        await app[SHUTDOWN].stop("email worker", [task])
        await app[SHUTDOWN].wait("email sender", sender.close())


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = app.get(EMAIL_WORKER)
    scheduler = EmailScheduler(app[DB], app[EMAIL_RENDERER].templates, settings,
                               on_queued=worker.wake if worker else None)
    app[EMAIL_SCHEDULER] = scheduler
    task = asyncio.create_task(scheduler.run(), name="email-scheduler") if settings.email.scheduler else None
    try:
        yield
    finally:
        scheduler.stop()
        await app[SHUTDOWN].stop("email scheduler", [task])


async def health_probe(app: web.Application) -> dict:
    """For /health (issue 6): the queue by status; degraded with dead letters or an open breaker."""
    rows = await app[DB].fetchall(
        "SELECT status, COUNT(*) AS n FROM email_messages "
        "WHERE status IN ('queued', 'sending', 'failed', 'dead') GROUP BY status")
    counts = {"queued": 0, "sending": 0, "failed": 0, "dead": 0, **{r["status"]: int(r["n"]) for r in rows}}
    worker = app.get(EMAIL_WORKER)
    breaker = worker.breaker.state if worker is not None else None
    out = {"status": "degraded" if counts["dead"] or breaker == "open" else "healthy", "messages": counts,
           "sender_breaker": breaker, "figures": {"queued": counts["queued"], "dead": counts["dead"]},
           "queues": {"email_queued": counts["queued"] + counts["failed"], "email_sending": counts["sending"],
                      "email_dead": counts["dead"], "email_queue_batcher": app[EMAIL_QUEUE].depth
                      if EMAIL_QUEUE in app else 0}}
    if breaker == "open":
        out["error"] = "the email provider keeps failing: its circuit breaker is open"
    return out


def setup(app: web.Application) -> None:
    """Collect the templates (a duplicate name or alias is a start-up error), then add resources
    and routes."""
    settings = app[SETTINGS]
    templates = collect_templates(app[PLUGINS], settings)
    aliases(templates)  # raises TemplateError for an alias taken twice
    app[EMAIL_RENDERER] = EmailRenderer(templates, settings)
    app[EMAIL_UNSUBSCRIBE] = unsubscribe.UnsubscribeLinks(settings, unsubscribe.unsubscribe_key(settings))
    if BREAKERS not in app:
        app[BREAKERS] = BreakerRegistry()
    aiohttp_jinja2.setup(app, app_key=EMAIL_PAGES, autoescape=True,
                         loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "pages")))
    app.cleanup_ctx.append(queue_ctx)
    app.cleanup_ctx.append(worker_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    email_api.setup_routes(app)
    unsubscribe.setup_routes(app)
    health.register(app, "email-notifications", health_probe)
