"""`POST /functions/v1/analytics-tracking/{endpoint}`, and `setup(app)` for all of analytics.

`setup(app)` collects the endpoints plugins register (`register_analytics_endpoints`), and adds
the analytics resources (the group committer, the scheduled jobs), the ingestion route, the
Segment door (`analytics_segment`) and the read API (`analytics_api`).
"""

from __future__ import annotations

import dataclasses
import time

from aiohttp import web

from vibe.analytics import api as analytics_api
from vibe.analytics import contract
from vibe.analytics import segment as analytics_segment
from vibe.analytics.ingest import (
    AnalyticsState,
    committer_ctx,
    ingest,
    parse_json,
    read_body,
    sender_of,
)
from vibe.analytics.jobs import jobs_ctx
from vibe.analytics.keys import ANALYTICS
from vibe.analytics.model import (
    MAX_BATCH,
    EventInvalid,
    Sender,
    collect_endpoints,
    parse_time,
)
from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.ops import health
from vibe.users.keys import QUERY_CACHE
from vibe.web.errors import ApiError
from vibe.web.keys import COUNTRY
from vibe.web.validation import name_once

PREFIX = "/functions/v1/analytics-tracking"


def check_identity(raw_events: list, sender: Sender) -> None:
    """A signed-in user may send only their own events; an anonymous browser names no user."""
    for raw in raw_events:
        named = raw.get("user_id") if isinstance(raw, dict) else None
        if named is None:
            continue
        if sender.kind == "user" and named != sender.user_id:
            raise ApiError(403, "user_mismatch", "A signed-in user may only send events about themselves.")
        if sender.kind == "anonymous":
            raise ApiError(401, "unauthorized", "Naming a user_id needs that user's token or the write key.")


async def track(request: web.Request) -> web.Response:
    endpoint = request.app[ANALYTICS].endpoints.get(request.match_info["endpoint"])
    if endpoint is None:
        raise ApiError(404, "unknown_endpoint", f"No analytics endpoint {request.match_info['endpoint']!r}.")
    sender = await sender_of(request)
    if sender.kind != "server" and request.get(COUNTRY):  # a server's request is not where its events happen
        sender = dataclasses.replace(sender, country=request[COUNTRY])
    if sender.kind not in endpoint.senders:
        raise ApiError(403, "sender_not_allowed",
                       f"{endpoint.name} events may be sent by: {', '.join(sorted(endpoint.senders))}.")
    raw_body = await read_body(request)
    body = parse_json(raw_body)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be one event object or {\"batch\": [...]}.")
    is_batch = "batch" in body
    batch_sent_at = None
    if is_batch:
        extra = sorted(set(body) - {"batch", "sent_at"})
        if extra:
            raise ApiError(400, "invalid_body", f"Unknown field {extra[0]!r} beside 'batch'.")
        raw_events = body["batch"]
        if not isinstance(raw_events, list) or not 1 <= len(raw_events) <= MAX_BATCH:
            raise ApiError(400, "invalid_batch", f"'batch' must be a list of 1 to {MAX_BATCH} events.")
        if body.get("sent_at") is not None:
            try:
                batch_sent_at = parse_time(body["sent_at"], "sent_at")
            except EventInvalid as exc:
                raise ApiError(400, "invalid_body", exc.message) from None
    else:
        raw_events = [body]
    check_identity(raw_events, sender)
    results, stored = await ingest(request, [(endpoint, raw) for raw in raw_events], sender, batch_sent_at,
                                   len(raw_body), adapt=contract.adapt)
    if not stored:
        first = results[0]
        if not is_batch:
            raise ApiError(400, "invalid_event", name_once(first["field"], first["message"]), details=first)
        raise ApiError(400, "invalid_events", "No event in the batch is valid.", details=results)
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    # success: the original function's answer (last, so vibe's own counts still lead)
    return web.json_response({**counts, "results": results, "success": True})


async def health_probe(app: web.Application) -> dict:
    """For /health (issue 6): the batcher's depth and the last hour's volume; degraded when the
    batcher is near ANALYTICS_MAX_QUEUE (ingestion then answers 503)."""
    state, settings = app[ANALYTICS], app[SETTINGS]
    last_hour = await app[DB].fetchval("SELECT COUNT(*) FROM analytics_events WHERE received_at >= %s",
                                       (time.time() - 3600,))
    depth = state.committer.pending if state.committer is not None else 0
    return {"status": "degraded" if depth > 0.8 * settings.analytics.max_queue else "healthy",
            "endpoints": len(state.endpoints), "queues": {"analytics_batcher": depth},
            "figures": {"events last hour": int(last_hour or 0)}}


def setup(app: web.Application) -> None:
    """Register analytics on `app` (one call in create_app, after `users.setup`, which makes the
    shared DatabaseQueryCache)."""
    settings = app[SETTINGS]
    app[ANALYTICS] = AnalyticsState(
        endpoints=collect_endpoints(app[PLUGINS], settings),
        cache=app[QUERY_CACHE],
    )
    app.cleanup_ctx.append(committer_ctx)
    app.cleanup_ctx.append(jobs_ctx)
    analytics_api.setup_routes(app, PREFIX)
    app.router.add_post(PREFIX + "/{endpoint}", track)
    analytics_segment.setup_routes(app)
    health.register(app, "analytics-tracking", health_probe)

