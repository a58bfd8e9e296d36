"""The analytics read API (admins and the service; a user may read and export their own journey
and read their own user-insights), the original function's three reports (vibe.analytics.reports),
and erasure: `DELETE .../users/{user_id}`. A user's own journey and export hold only the events
sent with their user id; an admin's or the service's also those of the anonymous ids linked to
that user (vibe.analytics.store). Answers go through the shared DatabaseQueryCache, under
keys versioned by the writes (see AnalyticsState). Times in answers are ISO 8601 (vibe.web.times).
"""

from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from vibe.analytics import queries, reports
from vibe.analytics.keys import ANALYTICS
from vibe.analytics.model import (
    EventInvalid,
    check_id,
    check_name,
    parse_time,
    stored_event,
)
from vibe.analytics.store import export_user, forget_user
from vibe.keys import DB, SETTINGS
from vibe.web.auth import require
from vibe.web.errors import ApiError
from vibe.web.times import all_iso, with_iso

DEFAULT_SPAN = 30 * 86400


def _time(request: web.Request, field: str, default: float) -> float:
    raw = request.query.get(field)
    if raw is None or raw == "":
        return default
    try:
        value: float | str = float(raw)  # Unix seconds, else ISO 8601
    except ValueError:
        value = raw
    try:
        return parse_time(value, field)
    except EventInvalid as exc:
        raise ApiError(400, "invalid_query", exc.message) from None


def time_range(request: web.Request) -> tuple[float, float]:
    end = _time(request, "to", time.time())
    start = _time(request, "from", end - DEFAULT_SPAN)
    if start >= end:
        raise ApiError(400, "invalid_query", "'from' must be before 'to'.")
    return start, end


def _check(value: str, field: str, check: Callable[[Any, str], Any]) -> str:
    try:
        check(value, field)
    except EventInvalid as exc:
        raise ApiError(400, "invalid_query", exc.message) from None
    return value


async def cached(request: web.Request, key: tuple, tag: str, compute: Callable[[], Awaitable[Any]]) -> Any:
    """`compute()`, through the shared query cache for ANALYTICS_CACHE_TTL seconds (0: not cached)."""
    state, ttl = request.app[ANALYTICS], request.app[SETTINGS].analytics.cache_ttl
    cache_key = state.cache_key(tag, *key)
    value = state.cache.get(cache_key) if ttl else None
    if value is None:
        value = await compute()
        if ttl:
            state.cache.set(cache_key, value, expires_at=time.time() + ttl)
    return value


def iso_event(event: dict[str, Any]) -> dict[str, Any]:
    return with_iso(event, "timestamp", "received_at")


def iso_journey(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "sessions": [{**with_iso(s, "start", "end"), "events": [iso_event(e) for e in s["events"]]}
                                   for s in answer["sessions"]]}


async def get_metrics(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    name = request.query.get("name") or "*"
    if name != "*":
        _check(name, "name", check_name)
    interval = request.query.get("interval", "day")
    if interval not in ("hour", "day"):
        raise ApiError(400, "invalid_query", "'interval' must be hour or day.")
    start, end = time_range(request)
    db = request.app[DB]

    async def compute():
        try:
            answer = await queries.metrics(db, name, start, end, interval)
        except ValueError as exc:
            raise ApiError(400, "invalid_query", str(exc)) from None
        return {**answer, "series": all_iso(answer["series"], "start")}

    return web.json_response(await cached(request, ("metrics", name, interval, start, end), "events", compute))


async def get_business(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    start, end = time_range(request)
    db = request.app[DB]
    async def compute():
        return with_iso(await queries.business(db, start, end), "from", "to")

    return web.json_response(await cached(request, ("business", start, end), "business", compute))


async def get_rollup(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    kind = request.match_info["kind"]
    if kind not in queries.ROLLUPS:
        raise ApiError(404, "not_found", f"No aggregate {kind!r}; try {', '.join(queries.ROLLUPS)}.")
    kept = {e.aggregate for e in request.app[ANALYTICS].endpoints.values()}
    if kind not in kept:  # its table would read as zero: say so instead
        raise ApiError(404, "aggregate_unavailable",
                       f"No loaded plugin keeps the aggregate {kind!r} (the plugin that records it is disabled).")
    start, end = time_range(request)
    db = request.app[DB]
    async def compute():
        answer = await queries.rollup(db, kind, start, end)
        return {**with_iso(answer, "from", "to"), "rows": all_iso(answer["rows"], "day")}

    return web.json_response(await cached(request, ("rollup", kind, start, end), "events", compute))


async def get_funnel(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    steps = [s.strip() for s in request.query.get("steps", "").split(",")]
    if not 2 <= len(steps) <= 10:
        raise ApiError(400, "invalid_query", "'steps' must name 2 to 10 events, separated by commas.")
    for step in steps:
        _check(step, "steps", check_name)
    start, end = time_range(request)
    db = request.app[DB]
    async def compute():
        return with_iso(await queries.funnel(db, steps, start, end), "from", "to")

    return web.json_response(await cached(request, ("funnel", tuple(steps), start, end), "events", compute))


async def own_or_privileged(request: web.Request) -> tuple[str, bool]:
    """The user asked about, and whether the view includes their linked anonymous events (admins
    and the service: yes; the user themselves: no, only the events sent with their id)."""
    user_id = _check(request.match_info["user_id"], "user_id", check_id)
    principal = await require(request, "user", "admin", "service")
    if principal.role == "user" and principal.user_id != user_id:
        raise ApiError(403, "forbidden", "A user may only read their own analytics.")
    return user_id, principal.role != "user"


async def get_journey(request: web.Request) -> web.Response:
    user_id, linked = await own_or_privileged(request)
    start = _time(request, "from", 0.0) if "from" in request.query else None
    end = _time(request, "to", 0.0) if "to" in request.query else None
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10000:
        raise ApiError(400, "invalid_query", "'limit' must be a whole number from 1 to 10000.")
    db = request.app[DB]
    async def compute():
        return iso_journey(await queries.journey(db, user_id, start, end, limit, linked=linked))

    return web.json_response(await cached(request, ("journey", user_id, linked, start, end, limit), "events",
                                          compute))


async def export(request: web.Request) -> web.StreamResponse:
    """The user's events as JSON lines (never cached)."""
    user_id, linked = await own_or_privileged(request)
    rows = await export_user(request.app[DB], user_id, linked=linked)
    body = "".join(json.dumps(iso_event(stored_event(r)), separators=(",", ":")) + "\n" for r in rows)
    return web.Response(text=body, content_type="application/x-ndjson")


async def forget(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    user_id = _check(request.match_info["user_id"], "user_id", check_id)
    result = await forget_user(request.app[DB], user_id)
    request.app[ANALYTICS].clear_cache()
    return web.json_response({"user_id": user_id, **result})


def report_range(request: web.Request, default: str) -> tuple[float, float, str]:
    try:
        return reports.time_range(request.query.get("timeRange") or default)
    except ValueError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None


def with_business(request: web.Request, *key: Any) -> tuple:
    """A report's cache key: it reads the business views too, so their refreshes count."""
    return (*key, request.app[ANALYTICS].generations["business"])


async def get_dashboard(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    start, end, granularity = report_range(request, "7d")
    user_id = request.query.get("userId") or None
    if user_id is not None:
        _check(user_id, "userId", check_id)
    kept = "revenue" in {e.aggregate for e in request.app[ANALYTICS].endpoints.values()}
    db = request.app[DB]

    async def compute():
        answer = await reports.dashboard(db, start, end, granularity, user_id, revenue_kept=kept)
        answer["data"]["user_engagement"] = all_iso(answer["data"]["user_engagement"], "date")
        return with_iso(answer, "from", "to")

    key = with_business(request, "dashboard", start, end, granularity, user_id, kept)
    return web.json_response(await cached(request, key, "events", compute))


async def get_user_insights(request: web.Request) -> web.Response:
    """A signed-in caller's own by default; another user's for admins and the service only."""
    principal = await require(request, "user", "admin", "service")
    user_id = request.query.get("userId") or principal.user_id
    if user_id is None:
        raise ApiError(400, "invalid_query", "'userId' is required.")
    _check(user_id, "userId", check_id)
    if principal.role == "user" and principal.user_id != user_id:
        raise ApiError(403, "forbidden", "A user may only read their own analytics.")
    linked, db = principal.role != "user", request.app[DB]

    async def compute():
        answer = (await reports.user_insights(db, user_id, linked=linked))["data"]
        profile = answer["profile"] and with_iso(answer["profile"], "created_at", "updated_at", "current_period_end")
        return {"data": {**answer, "profile": profile, "recent_activity": all_iso(answer["recent_activity"],
                                                                                  "timestamp")}}

    return web.json_response(await cached(request, ("user-insights", user_id, linked), "events", compute))


async def get_business_metrics(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    start, end, _ = report_range(request, "30d")
    metric = request.query.get("metricType") or None
    if metric is not None:
        _check(metric, "metricType", check_name)
    db = request.app[DB]

    async def compute():
        answer = await reports.business_metrics(db, start, end, metric)
        return {**with_iso(answer, "from", "to"), "data": all_iso(answer["data"], "timestamp")}

    key = with_business(request, "business-metrics", start, end, metric)
    return web.json_response(await cached(request, key, "events", compute))


def setup_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/metrics", get_metrics)
    app.router.add_get(prefix + "/business", get_business)
    app.router.add_get(prefix + "/funnel", get_funnel)
    app.router.add_get(prefix + "/aggregates/{kind}", get_rollup)
    app.router.add_get(prefix + "/journey/{user_id}", get_journey)
    app.router.add_get(prefix + "/dashboard", get_dashboard)
    app.router.add_get(prefix + "/user-insights", get_user_insights)
    app.router.add_get(prefix + "/business-metrics", get_business_metrics)
    app.router.add_get(prefix + "/users/{user_id}/events", export)
    app.router.add_delete(prefix + "/users/{user_id}", forget)
