"""The web layer's application and request state: token verification, rate limits, load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from vibe.web.auth import Principal, TokenVerifier

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.web.ratelimit import LoadMonitor, RateLimiter  # noqa: F401

TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)
RATE_LIMITER = web.AppKey("rate_limiter", "RateLimiter")
LOAD_MONITOR = web.AppKey("load_monitor", "LoadMonitor")
TRUSTED_NETS = web.AppKey("rate_limit_trusted_nets", tuple)  # ip_network objects

PRINCIPAL = web.RequestKey("principal", Principal)
