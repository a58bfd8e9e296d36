"""Per-tier token buckets (aiolimiter) for every route, with adaptive shrinking under load.

* A signed-in user gets a bucket per (user, tier) sized by RATE_LIMITS (requests a minute);
  the service role one per token subject; a request without a user one per client IP
  (RATE_LIMIT_ANONYMOUS), where `X-Forwarded-For` counts only when the peer is one of
  RATE_LIMIT_TRUSTED_PROXIES.
* The Stripe webhook: validly signed events are never throttled; only requests that FAIL
  signature verification count, RATE_LIMIT_WEBHOOK_FAILURES a minute per source.
* Analytics: a request with the valid `X-Write-Key` (a server) is not throttled either; a wrong
  key counts against its client IP like any anonymous request.
* CORS preflights never get here: vibe/web/cors.py answers them first, so a browser's
  `OPTIONS` costs no token.
* Never waits for a token: over the limit is an immediate 429 with `Retry-After`. Every answer
  carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds until the
  bucket is full again).
* Buckets live in a cachetools LRU of RATE_LIMIT_MAX_KEYS entries: a flood of distinct keys
  evicts the least recently seen buckets instead of growing the process.
* `LoadMonitor` samples event-loop lag and database pool waits; each overloaded sample raises
  the pressure by one level; LOAD_RECOVERY_SECONDS of calm samples lower it by one. At pressure p, the first p tiers of
  RATE_LIMIT_SHRINK_ORDER shrink, the lowest the most (factor ** (p - position)); an entry
  `country:CC+CC` stands for the requests from those countries (the country web.geo found).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import ipaddress
import json
import math
from typing import AsyncIterator

from aiohttp import web
from aiolimiter import AsyncLimiter
from cachetools import LRUCache

from vibe.analytics.ingest import write_key_matches
from vibe.config import Settings
from vibe.db.database import DatabaseUnavailable
from vibe.keys import DB, REQUEST_ID, SETTINGS, SHUTDOWN
from vibe.users.sessions import identify
from vibe.web.auth import AuthError
from vibe.web.errors import error_response
from vibe.web.keys import CLIENT_IP, COUNTRY, LOAD_MONITOR, RATE_LIMITER, TRUSTED_NETS

WEBHOOK_PATH = "/functions/v1/stripe-webhook"
SIGNATURE_CODES = frozenset({"missing_signature", "malformed_signature", "invalid_signature",
                             "timestamp_out_of_tolerance"})
PERIOD = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        h = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
             "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h


class LoadMonitor:
    """Pressure level from event-loop lag and pool waits (0 = healthy)."""

    def __init__(self, settings: Settings):
        self.interval = settings.web.load_monitor_interval
        self.lag_threshold = settings.web.load_lag_threshold
        self.wait_threshold = settings.web.load_pool_wait_threshold
        self.max_level = len(settings.web.rate_limit_shrink_order)
        # one level down per LOAD_RECOVERY_SECONDS of calm samples in a row: quick to shrink, slow to grow
        self.calm_needed = max(1, math.ceil(settings.web.load_recovery_seconds / self.interval))
        self.calm = 0
        self.level = 0
        self.lag = 0.0  # smoothed event-loop lag, seconds
        self.last_waiting = 0

    def sample(self, lag: float, waiting: int) -> int:
        """Take one sample. The lag is smoothed (half the last sample, half the history), so one
        stall (a GC pause) is not an overload but lag sample after sample is."""
        self.lag = (self.lag + lag) / 2
        self.last_waiting = waiting
        if self.lag > self.lag_threshold or waiting > self.wait_threshold:
            self.level, self.calm = min(self.level + 1, self.max_level), 0
        elif self.level:
            self.calm += 1
            if self.calm >= self.calm_needed:
                self.level, self.calm = self.level - 1, 0
        return self.level

    async def run(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            db = app.get(DB)
            self.sample(lag, db.pool_state().get("waiting", 0) if db is not None else 0)


class RateLimiter:
    def __init__(self, settings: Settings, monitor: LoadMonitor):
        self.limits = {**settings.web.rate_limits, "anonymous": settings.web.rate_limit_anonymous,
                       "service": settings.web.rate_limit_service, "webhook": settings.web.rate_limit_webhook_failures}
        self.shrink_order = settings.web.rate_limit_shrink_order
        self.country_groups = [(i, frozenset(entry[len("country:"):].split("+")))
                               for i, entry in enumerate(self.shrink_order) if entry.startswith("country:")]
        self.factor = settings.web.rate_limit_shrink_factor
        self.monitor = monitor
        self.buckets: LRUCache = LRUCache(maxsize=settings.web.rate_limit_max_keys)
        self.limited = 0
        self.rejections: collections.Counter[str] = collections.Counter()  # by tier, for /metrics

    def limit_for(self, tier: str, country: str | None = None) -> int:
        """The tier's limit now, shrunk under pressure (unknown tiers count as free). A request
        from a country of a `country:CC+CC` entry shrinks at that entry's place if it is earlier."""
        base = self.limits.get(tier) or self.limits.get("free", 100)
        level = self.monitor.level
        if level:
            places = [self.shrink_order.index(tier)] if tier in self.shrink_order else []
            if country is not None:
                places += [i for i, codes in self.country_groups if country in codes]
            if places and min(places) < level:
                return max(1, int(base * self.factor ** (level - min(places))))
        return base

    def _bucket(self, key: str, tier: str) -> AsyncLimiter:
        bucket_key = f"{tier}|{key}"
        bucket = self.buckets.get(bucket_key)
        if bucket is None:
            bucket = self.buckets[bucket_key] = AsyncLimiter(self.limits.get(tier) or self.limits.get("free", 100), PERIOD)
        return bucket

    def peek(self, key: str, tier: str, country: str | None = None) -> Decision:
        """The bucket's state without taking a token."""
        return self._decide(self._bucket(key, tier), tier, country, take=False)

    def hit(self, key: str, tier: str, country: str | None = None) -> Decision:
        """Take one token if there is one; never waits."""
        return self._decide(self._bucket(key, tier), tier, country, take=True)

    def _decide(self, bucket: AsyncLimiter, tier: str, country: str | None, *, take: bool) -> Decision:
        limit = self.limit_for(tier, country)
        # Under pressure the bucket acts `max_rate - limit` tokens smaller: ask for that headroom.
        headroom = bucket.max_rate - limit
        fits = bucket.has_capacity(1 + headroom)  # also drains what leaked out since the last look
        allowed = fits or not take
        if take and allowed:
            bucket._level += 1  # what acquire() does when capacity is there, without a coroutine
        level = bucket._level  # aiolimiter keeps the bucket's fill here (leaked by has_capacity)
        rate = bucket.max_rate / bucket.time_period
        remaining = max(0, int(limit - level))
        reset = math.ceil(level / rate) if level > 0 else 0
        retry = 0 if allowed else max(1, math.ceil((level + 1 - limit) / rate))
        if not allowed:
            self.limited += 1
            self.rejections[tier] += 1
        return Decision(allowed, limit, remaining, reset, retry)


def client_ip(request: web.Request, trusted: tuple) -> str:
    """The client's address: the peer, or with a trusted proxy the last untrusted X-Forwarded-For hop."""
    peer = request.remote or "unknown"
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop if _is_ip(hop) else peer
    return hops[0] if hops and _is_ip(hops[0]) else peer


# Parsing an address costs microseconds (ipaddress): the answers for the addresses seen lately
# are kept (bounded, so a flood of forged X-Forwarded-For values only evicts).
@functools.lru_cache(maxsize=8192)
def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def client_ip_of(request: web.Request) -> str:
    """`client_ip` with the app's trusted proxies, computed once per request (geo asks too)."""
    ip = request.get(CLIENT_IP)
    if ip is None:
        ip = request[CLIENT_IP] = client_ip(request, request.app[TRUSTED_NETS])
    return ip


@functools.lru_cache(maxsize=8192)
def is_trusted(address: str | None, trusted: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


async def _subject(request: web.Request) -> tuple[str, str]:
    """(bucket key, tier) for the caller; a bad token counts against its client IP."""
    try:
        session = await identify(request)
    except (AuthError, DatabaseUnavailable):
        session = None
    if session is not None and session.principal.user_id:
        return f"user:{session.principal.user_id}", session.tier
    if session is not None and session.principal.is_service:
        return f"service:{session.principal.claims.get('sub') or 'key'}", "service"
    return f"ip:{client_ip_of(request)}", "anonymous"


def _too_many(request: web.Request, decision: Decision) -> web.Response:
    return error_response(429, "rate_limited",
                          f"Too many requests: the limit is {decision.limit} a minute; retry in "
                          f"{decision.retry_after} s.", request.get(REQUEST_ID), headers=decision.headers())


def _signature_failed(response: web.StreamResponse) -> bool:
    if response.status != 400 or not isinstance(response, web.Response) or not response.body:
        return False
    try:
        code = json.loads(response.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return code in SIGNATURE_CODES


def _is_probe(path: str) -> bool:
    """Health and metrics probes: what monitors and load balancers poll, most of all when the
    service is under load and the adaptive limits shrink. Throttling them would make an
    overloaded service look dead."""
    return path in ("/health", "/metrics") or (path.startswith("/functions/v1/") and path.endswith("/health"))


@web.middleware
async def ratelimit_middleware(request: web.Request, handler):
    limiter = request.app[RATE_LIMITER]
    if _is_probe(request.path):  # answered always, with the caller's headers, costing nothing
        key, tier = await _subject(request)
        decision = limiter.peek(key, tier, request.get(COUNTRY))
        response = await handler(request)
        if not response.prepared:
            response.headers.update(decision.headers())
        return response
    if request.path == WEBHOOK_PATH:
        source = f"ip:{client_ip_of(request)}"
        response = await handler(request)
        decision = limiter.hit(source, "webhook") if _signature_failed(response) else limiter.peek(source, "webhook")
        if not decision.allowed:
            return _too_many(request, decision)
        if not response.prepared:
            response.headers.update(decision.headers())
        return response
    write_key = request.headers.get("X-Write-Key")
    if write_key is not None and write_key_matches(request.app[SETTINGS], write_key):
        # -- analytics (issue 4): a server holding the analytics write key is trusted like a
        # signed Stripe event: not throttled; the analytics batcher sheds load itself (503).
        return await handler(request)
    key, tier = await _subject(request)
    decision = limiter.hit(key, tier, request.get(COUNTRY))
    if not decision.allowed:
        return _too_many(request, decision)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and the like: error_middleware answers the rest
        exc.headers.update(decision.headers())
        raise
    if not response.prepared:  # a streamed answer has sent its headers already
        response.headers.update(decision.headers())
    return response


async def ratelimit_ctx(app: web.Application) -> AsyncIterator[None]:
    """The load monitor's sampling loop; the limiter itself is created in `setup`."""
    task = asyncio.create_task(app[LOAD_MONITOR].run(app), name="load-monitor")
    try:
        yield
    finally:
        task.cancel()
        await app[SHUTDOWN].stop("load monitor", [task])


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    monitor = LoadMonitor(settings)
    app[LOAD_MONITOR] = monitor
    app[RATE_LIMITER] = RateLimiter(settings, monitor)
    app[TRUSTED_NETS] = tuple(ipaddress.ip_network(p, strict=False) for p in settings.web.rate_limit_trusted_proxies)
    app.cleanup_ctx.append(ratelimit_ctx)
