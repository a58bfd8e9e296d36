"""`GET /health` and `GET /functions/v1/<function>/health`: can the service do its job, and what waits.

Each function registers a probe from its own `setup(app)`:

    health.register(app, "email-notifications", email_probe)

A probe is `async probe(app) -> dict` with a `status` (`healthy`, `degraded`, `unhealthy`) and
whatever it wants to show; a `queues` mapping `{name: depth}` is exported to /metrics too. A
probe may raise `DatabaseUnavailable` (the function is then `unhealthy`).

A probe gives a time as Unix seconds under a key ending in `_at` (`last_error_at`); the answer
shows every such time as ISO 8601 UTC (`vibe.web.times`), as `started_at` is. Durations stay
numbers (`uptime_seconds`, `latency_ms`).

The service is `unhealthy` (503) when the database is unreachable or a function is unhealthy,
`degraded` when a function is degraded or a circuit breaker is open, `healthy` otherwise.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vibe import __version__
from vibe.db.database import DatabaseUnavailable
from vibe.keys import DB, STARTED_AT
from vibe.ops.keys import BREAKERS, CACHES, HEALTH_PROBES
from vibe.web.errors import ApiError
from vibe.web.times import iso

Probe = Callable[[web.Application], Awaitable[dict[str, Any]]]
STATUSES = ("healthy", "degraded", "unhealthy")


def register(app: web.Application, function: str, probe: Probe) -> None:
    probes = app.setdefault(HEALTH_PROBES, {})
    if function in probes:
        raise ValueError(f"two health probes for {function!r}")
    probes[function] = probe


def worst(*statuses: str) -> str:
    return max(statuses, key=STATUSES.index, default="healthy")


def breaker_states(app: web.Application) -> dict[str, dict]:
    registry = app.get(BREAKERS)  # the resilience registry (the email sender's breaker, ...)
    return registry.snapshot() if registry is not None else {}


def register_cache(app: web.Application, cache: Any) -> None:
    """Report an in-process cache (anything with `.stats()`) in /health and /metrics."""
    app.setdefault(CACHES, []).append(cache)


def cache_ratios(app: web.Application) -> dict[str, dict]:
    out = {}
    for cache in app.get(CACHES, ()):
        s = cache.stats()
        looked = s["hits"] + s["misses"]
        out[s["name"]] = {"hit_ratio": round(s["hits"] / looked, 3) if looked else None,
                          "hits": s["hits"], "misses": s["misses"], "evictions": s["evictions"],
                          "entries": s["entries"], "bytes": s["bytes"]}
    return out


DATABASE_DOWN = "database unavailable: "


def iso_times(value: Any) -> Any:
    """`value` with every number under a key ending in `_at`, at any depth, as ISO 8601 UTC."""
    if isinstance(value, dict):
        return {k: iso(v) if k.endswith("_at") and isinstance(v, (int, float)) and not isinstance(v, bool)
                else iso_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [iso_times(v) for v in value]
    return value


async def run_probe(app: web.Application, function: str, probe: Probe) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = iso_times(dict(await probe(app)))
    except DatabaseUnavailable as exc:
        result = {"status": "unhealthy", "error": f"{DATABASE_DOWN}{exc}"}
    result.setdefault("status", "healthy")
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return result


async def snapshot(app: web.Application) -> dict[str, Any]:
    """The whole health document (also used by /metrics, the dashboard and the alert watchdog)."""
    db = app[DB]
    body: dict[str, Any] = {
        "status": "healthy", "version": __version__, "process": os.getpid(),
        "started_at": iso(int(app[STARTED_AT])), "uptime_seconds": round(time.time() - app[STARTED_AT], 1),
        "database": {"dialect": db.dialect, "reachable": True}, "pool": db.pool_state(),
    }
    try:
        body["database"]["round_trip_ms"] = round(await db.ping() * 1000, 2)
    except DatabaseUnavailable as exc:
        body["database"].update(reachable=False, error=str(exc))
    probes = app.get(HEALTH_PROBES, {})
    results = await asyncio.gather(*(run_probe(app, name, p) for name, p in probes.items()))
    body["functions"] = dict(zip(probes, results))
    lost = next((r["error"] for r in results if r.get("error", "").startswith(DATABASE_DOWN)), None)
    if lost and body["database"]["reachable"]:  # it went away between the ping and the probes
        body["database"].update(reachable=False, error=lost[len(DATABASE_DOWN):])
    if "events" in body["functions"].get("stripe-webhook", {}):  # the seed's field, kept for its readers
        body["stripe_events"] = body["functions"]["stripe-webhook"]["events"]
    body["queues"] = {q: n for r in results for q, n in r.get("queues", {}).items()}
    body["caches"] = cache_ratios(app)
    body["circuit_breakers"] = breaker_states(app)
    status = worst(*(r["status"] for r in results))
    if any(b["state"] == "open" for b in body["circuit_breakers"].values()):
        status = worst(status, "degraded")
    if not body["database"]["reachable"]:
        status = "unhealthy"
    body["status"] = status
    return body


async def health(request: web.Request) -> web.Response:
    body = await snapshot(request.app)
    return web.json_response(body, status=503 if body["status"] == "unhealthy" else 200)


async def function_health(request: web.Request) -> web.Response:
    name = request.match_info["function"]
    probe = request.app.get(HEALTH_PROBES, {}).get(name)
    if probe is None:
        raise ApiError(404, "unknown_function", f"No function is called {name!r}.",
                       details={"functions": sorted(request.app.get(HEALTH_PROBES, {}))})
    result = await run_probe(request.app, name, probe)
    body = {"function": name, "version": __version__, **result}
    return web.json_response(body, status=503 if result["status"] == "unhealthy" else 200)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    # Added before every function's own routes, so no `{id}` route can shadow it.
    app.router.add_get("/functions/v1/{function}/health", function_health)
