"""Operations wiring: health probes, /metrics, the alert watchdog, /dashboard and /openapi.json.

`setup(app)` is called once by `create_app`, after the functions' own setup. Each function
registers its health probe (`health.register`) from its own module; the user-management probe
lives here because its module predates the registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vibe.keys import DB, LOAD_MONITOR
from vibe.ops import alerts, dashboard, health, metrics
from vibe.web import openapi


async def users_probe(app: web.Application) -> dict[str, Any]:
    """The profiles table answers; under load the rate limits shrink (degraded)."""
    await app[DB].fetchall("SELECT id FROM profiles LIMIT 1")
    level = app[LOAD_MONITOR].level
    out: dict[str, Any] = {"status": "degraded" if level else "healthy", "load_level": level,
                           "caches": health.cache_ratios(app)}
    if level:
        out["error"] = f"overloaded (level {level}): rate limits are shrunk"
    return out


def setup(app: web.Application) -> None:
    health.register(app, "user-management", users_probe)
    metrics.setup(app)
    app.cleanup_ctx.append(alerts.watchdog_ctx)
    dashboard.setup(app)
    openapi.setup(app)
