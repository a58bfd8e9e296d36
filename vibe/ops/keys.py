"""Operations' state: the registries the concerns add to (health probes, circuit breakers,
caches), the metrics, the watchdog and the dashboard's templates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.ops.alerts import Watchdog  # noqa: F401
    from vibe.ops.metrics import Metrics  # noqa: F401
    from vibe.ops.resilience import BreakerRegistry  # noqa: F401

HEALTH_PROBES = web.AppKey("health_probes", dict)  # function name -> async probe(app) -> dict
BREAKERS = web.AppKey("breakers", "BreakerRegistry")  # every circuit breaker, by name (/health, /metrics)
CACHES = web.AppKey("caches", list)  # every in-process cache with .stats() (/health, /metrics)
METRICS = web.AppKey("metrics", "Metrics")  # this app's Prometheus registry and request window
WATCHDOG = web.AppKey("watchdog", "Watchdog")
DASHBOARD_PAGES = web.AppKey("dashboard_pages", jinja2.Environment)
