"""The web layer's application and request state: token verification, rate limits, load, geography."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from vibe.web.auth import Principal, TokenVerifier

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.web.geo import Geo  # noqa: F401
    from vibe.web.ratelimit import LoadMonitor, RateLimiter  # noqa: F401

TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)
RATE_LIMITER = web.AppKey("rate_limiter", "RateLimiter")
LOAD_MONITOR = web.AppKey("load_monitor", "LoadMonitor")
TRUSTED_NETS = web.AppKey("rate_limit_trusted_nets", tuple)  # ip_network objects
GEO = web.AppKey("geo", "Geo")  # the country lookup and rule, when GEO_COUNTRY_HEADER or GEOIP_DATABASE is set

PRINCIPAL = web.RequestKey("principal", Principal)
CLIENT_IP = web.RequestKey("client_ip", str)  # computed once per request (ratelimit.client_ip_of)
COUNTRY = web.RequestKey("country", str)  # ISO 3166 alpha-2, or None when unknown (web.geo)
