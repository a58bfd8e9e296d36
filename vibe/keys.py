"""Every piece of application state, as typed `web.AppKey`s. Nothing else is stored on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy
from aiohttp import web

from vibe.config import Settings
from vibe.db.database import Database

if TYPE_CHECKING:
    from vibe.analytics.ingest import AnalyticsState
    from vibe.billing.dispatcher import Dispatcher
    from vibe.billing.registry import Handler
    from vibe.db.groupcommit import GroupCommitter
    from vibe.web.shutdown import Shutdown

import aiohttp

from vibe.web.auth import Principal, TokenVerifier

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
PLUGINS = web.AppKey("plugins", pluggy.PluginManager)
STARTED_AT = web.AppKey("started_at", float)
STRIPE_HANDLERS = web.AppKey("stripe_handlers", dict[str, "Handler"])
STRIPE_INBOX = web.AppKey("stripe_inbox", "GroupCommitter")
DISPATCHER = web.AppKey("dispatcher", "Dispatcher")
SHUTDOWN = web.AppKey("shutdown", "Shutdown")  # the deadline the resources share as they stop

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)

# Per-request state.
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)

# -- users, rate limits and caches (issue 3)
if TYPE_CHECKING:
    from vibe.users.caches import ContentCache, DatabaseQueryCache, UserSessionCache
    from vibe.web.ratelimit import LoadMonitor, RateLimiter

USER_SESSION_CACHE = web.AppKey("user_session_cache", "UserSessionCache")
CONTENT_CACHE = web.AppKey("content_cache", "ContentCache")
QUERY_CACHE = web.AppKey("query_cache", "DatabaseQueryCache")
RATE_LIMITER = web.AppKey("rate_limiter", "RateLimiter")
LOAD_MONITOR = web.AppKey("load_monitor", "LoadMonitor")
TRUSTED_NETS = web.AppKey("rate_limit_trusted_nets", tuple)  # ip_network objects
# The caller's profile as the rate-limit middleware resolved it (None: no profile yet).
SESSION = web.RequestKey("session", "Session")

# -- analytics (issue 4)
ANALYTICS = web.AppKey("analytics", "AnalyticsState")

# -- email (issue 5)
import jinja2  # noqa: E402

if TYPE_CHECKING:
    from vibe.email.schedule import EmailScheduler
    from vibe.email.templates import EmailRenderer
    from vibe.email.unsubscribe import UnsubscribeLinks
    from vibe.email.worker import EmailWorker
    from vibe.ops.resilience import BreakerRegistry

BREAKERS = web.AppKey("breakers", "BreakerRegistry")  # every circuit breaker, by name (/health, /metrics)
EMAIL_RENDERER = web.AppKey("email_renderer", "EmailRenderer")
EMAIL_QUEUE = web.AppKey("email_queue", "GroupCommitter")
EMAIL_WORKER = web.AppKey("email_worker", "EmailWorker")
EMAIL_SCHEDULER = web.AppKey("email_scheduler", "EmailScheduler")
EMAIL_UNSUBSCRIBE = web.AppKey("email_unsubscribe", "UnsubscribeLinks")
EMAIL_PAGES = web.AppKey("email_pages", jinja2.Environment)  # aiohttp-jinja2 environment for templates/pages

# -- operations: health, metrics, alerts, dashboard (issue 6)
if TYPE_CHECKING:
    from vibe.ops.alerts import Watchdog
    from vibe.ops.metrics import Metrics

HEALTH_PROBES = web.AppKey("health_probes", dict)  # function name -> async probe(app) -> dict
METRICS = web.AppKey("metrics", "Metrics")  # this app's Prometheus registry and request window
WATCHDOG = web.AppKey("watchdog", "Watchdog")
DASHBOARD_PAGES = web.AppKey("dashboard_pages", jinja2.Environment)
