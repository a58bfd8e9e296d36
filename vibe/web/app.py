"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from vibe.analytics import service as analytics_http
from vibe.billing import service as billing
from vibe.billing import webhook as webhooks
from vibe.config import Settings
from vibe.db.database import create_database
from vibe.db.migrations import migrate
from vibe.email import service as email_service
from vibe.keys import DB, HTTP_SESSION, PLUGINS, SETTINGS, SHUTDOWN, STARTED_AT
from vibe.ops import health
from vibe.ops import service as operations
from vibe.plugins.host import PluginManager, build_plugin_manager
from vibe.users import service as users
from vibe.web import cors, geo
from vibe.web.auth import JwksCache, TokenVerifier
from vibe.web.keys import TOKEN_VERIFIER
from vibe.web.middlewares import error_middleware, request_id_middleware
from vibe.web.ratelimit import ratelimit_middleware
from vibe.web.shutdown import Shutdown


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    db = create_database(app[SETTINGS])
    await db.open()
    app[DB] = db
    try:
        await migrate(db)
        yield
    finally:
        # Last to stop. A connection still out (a task cut short past the grace) would hold
        # the pool's close for ever: past the deadline, the connections are closed outright.
        if not await app[SHUTDOWN].wait("database pool", db.close()):
            await app[SHUTDOWN].wait("database pool, closing at once", db.abort())


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    """One shared HTTP client session (JWKS, email API, alerts) and the token verifier."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    app[HTTP_SESSION] = session
    jwks = JwksCache(
        settings.web.supabase_jwks_url, lambda: session, ttl=settings.web.jwks_cache_seconds,
        timeout=settings.web.jwks_timeout_seconds, min_refresh=settings.web.jwks_min_refresh_seconds,
    ) if settings.web.supabase_jwks_url else None
    app[TOKEN_VERIFIER] = TokenVerifier(settings, jwks)
    try:
        yield
    finally:
        await app[SHUTDOWN].wait("HTTP client session", session.close())


def create_app(settings: Settings, *, pm: PluginManager | None = None) -> web.Application:
    """Build the application. Start-up errors (plugins, handlers) raise here, before serving."""
    pm = pm or build_plugin_manager(settings)
    app = web.Application(
        # CORS preflights (issue 13) are answered first, before anything counts or looks them up.
        # Geographic restrictions (issue 19) answer 451 before the rate limiter authenticates
        # anyone or asks the database; not installed when the feature is off.
        middlewares=[request_id_middleware, cors.cors_middleware, *geo.middlewares(settings), ratelimit_middleware,
                     error_middleware],
        client_max_size=webhooks.MAX_BODY,
        # Connection limits (issue 7, docs/reliability.md): a connection idle (or dripping its
        # request line and headers) longer than the keep-alive is closed; request line and
        # each header are bounded, and so is their number.
        handler_args={"keepalive_timeout": settings.web.keepalive_seconds,
                      "max_line_size": settings.web.max_header_bytes,
                      "max_field_size": settings.web.max_header_bytes,
                      "max_headers": settings.web.max_headers},
    )
    app[SETTINGS] = settings
    app[PLUGINS] = pm
    app[STARTED_AT] = time.time()
    app[SHUTDOWN] = Shutdown(settings.web.shutdown_grace_seconds)
    app.cleanup_ctx.append(http_ctx)
    app.cleanup_ctx.append(database_ctx)
    cors.setup(app)
    health.setup_routes(app)
    billing.setup(app)
    users.setup(app)
    geo.setup(app)
    analytics_http.setup(app)
    email_service.setup(app)
    operations.setup(app)
    for result in pm.hook.register_routes(app=app):
        if asyncio.iscoroutine(result):
            raise TypeError("register_routes implementations must be plain functions")
    return app

