"""Operations wiring: health probes, /metrics, the alert watchdog, /dashboard and /openapi.json.

`setup(app)` is called once by `create_app`, after the functions' own setup. Each function
registers its health probe (`health.register`) from its own `setup`.
"""

from __future__ import annotations

from aiohttp import web

from vibe.ops import alerts, dashboard, metrics
from vibe.web import openapi


def setup(app: web.Application) -> None:
    metrics.setup(app)
    app.cleanup_ctx.append(alerts.watchdog_ctx)
    dashboard.setup(app)
    openapi.setup(app)
