"""Browsers on other origins (CORS): every route answers a preflight, and every answer to a
browser says whether its page may read it. CORS_ALLOWED_ORIGINS names the origins (`*`: any;
the default is `*` in development and test, none in production).

* A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by
  `cors_middleware`, which sits right after the request id (so a preflight has its
  `X-Request-ID`) and the metrics layer (which counts it), before geography, rate limits,
  authentication and the database: no token is taken from any bucket, nothing is looked up. An allowed origin gets 204 with the methods
  (ALLOW_METHODS), the request headers a supabase-js or Segment client sends (ALLOW_HEADERS) and
  `Access-Control-Max-Age`; another origin a 403 JSON error `origin_not_allowed`, without
  `Access-Control-Allow-Origin`; a path no route serves the usual 404.
* Every other answer to a request with an `Origin` carries `Vary: Origin` and, for an allowed
  origin, `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` (the request id,
  `Retry-After`, the `X-RateLimit-*` headers): 2xx, 4xx, 429 and 5xx alike. They are added in
  `on_response_prepare`, just before the headers go out, so an answer a plugin streams or an
  error aiohttp itself renders has them too. A request from an origin that is not allowed is
  served as before, without `Access-Control-Allow-Origin`: the browser keeps the answer from
  the page.
* Never `Access-Control-Allow-Credentials`: callers send bearer tokens, not cookies, so `*` is
  safe for what it is (any page may call the API with a token it holds).
* Requests without `Origin` (Stripe, Resend, servers, curl, monitors) are untouched.

Why this module and not aiohttp-cors: aiohttp-cors answers preflights from `OPTIONS` routes it
adds for each registered route, so a preflight would pass through every middleware (the geo
rule, the rate limiter, which identifies the caller and takes a token) before being answered,
and every route, plugins' included, must be registered with it after the fact (a route it was
not given answers its preflight 405). Its releases are also far apart (0.7.0 in 2018, 0.8 in
2025). What the platform needs is this one page.
"""

from __future__ import annotations

from aiohttp import web

from vibe.keys import REQUEST_ID, SETTINGS
from vibe.web.errors import error_response

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
# supabase-js sends authorization, apikey, x-client-info (and content-type); servers and Segment
# clients x-write-key; a front end may pass its x-request-id on.
ALLOW_HEADERS = "authorization, x-client-info, apikey, content-type, x-write-key, x-request-id"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
MAX_AGE = "7200"  # seconds a browser may keep a preflight's answer (Chromium's own ceiling)


def allowed_origin(request: web.BaseRequest) -> str | None:
    """What `Access-Control-Allow-Origin` says for this request: `*`, its origin, or None."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    allowed = request.app[SETTINGS].web.cors_allowed_origins
    if "*" in allowed:
        return "*"
    return origin if origin.rstrip("/").lower() in allowed else None


def is_preflight(request: web.BaseRequest) -> bool:
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


@web.middleware
async def cors_middleware(request: web.Request, handler):
    if not is_preflight(request):
        return await handler(request)
    rid = request.get(REQUEST_ID)
    unrouted = request.match_info.http_exception
    if unrouted is not None and unrouted.status == 404:
        return error_response(404, "not_found", f"No route serves {request.path}.", rid)
    if allowed_origin(request) is None:
        return error_response(403, "origin_not_allowed",
                              f"The origin {request.headers['Origin']} may not call this service from a browser "
                              "(CORS_ALLOWED_ORIGINS).", rid)
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": ALLOW_METHODS, "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE})


async def add_cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: Vary, and for an allowed origin Allow-Origin and the exposed headers."""
    if "Origin" not in request.headers:
        return
    vary = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
    if "origin" not in (v.lower() for v in vary):
        response.headers["Vary"] = ", ".join([*vary, "Origin"])
    origin = allowed_origin(request)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    if not is_preflight(request):
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def describe(origins: tuple[str, ...]) -> str:
    """What check-config and the documentation say about CORS_ALLOWED_ORIGINS's value."""
    if "*" in origins:
        return "browsers on any origin may call the API (*)"
    if not origins:
        return "no cross-origin access: pages on other origins cannot read any answer"
    return "browsers on these origins may call the API: " + ", ".join(origins)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(add_cors_headers)
