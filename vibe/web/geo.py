"""Geographic restrictions (issue 19): a request's country, and the rule that answers 451.

Where the country comes from, the first that knows:

* GEO_COUNTRY_HEADER, a header a CDN or proxy sets (`CF-IPCountry`, `CloudFront-Viewer-Country`,
  `X-Vercel-IP-Country`): believed only when the peer is one of RATE_LIMIT_TRUSTED_PROXIES;
  anything but two letters (Cloudflare's `XX` and `T1`, say) is no answer.
* GEOIP_DATABASE, a MaxMind-format country database (GeoLite2-Country, DB-IP's country lite),
  looked up for the client IP the rate limiter uses (`ratelimit.client_ip_of`: X-Forwarded-For
  only from a trusted proxy). Read with MaxMind's reader (memory-mapped), opened once, looked up
  through an LRU cache; a background task stats the file every GEOIP_CHECK_SECONDS and reopens
  it when it changed (a new file that will not open is logged, and the old one kept).

With neither, the feature is off: no middleware, `/health` says `"mode": "off"`. The country
(or None) is put on every request (`request[COUNTRY]`): analytics records it, the rate limiter's
`country:` shrink entries read it.

The rule (GEO_BLOCKED_COUNTRIES or GEO_ALLOWED_COUNTRIES; GEO_BLOCK_UNKNOWN for an unknown
country) applies to the learner-facing routes only (`covered`): user management, analytics, the
Segment door, the email API and the unsubscribe page; never Stripe's and Resend's signed
webhooks, health probes, /metrics, /openapi.json or /dashboard. A refused request is answered
451 by this middleware, before the rate limiter authenticates anyone or the database is asked
anything, and counted by (country, rule) for /metrics.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import maxminddb
from aiohttp import web

from vibe.config import ConfigError, Settings
from vibe.keys import REQUEST_ID, SETTINGS, SHUTDOWN
from vibe.ops import health
from vibe.web.errors import error_response
from vibe.web.keys import COUNTRY, GEO, TRUSTED_NETS
from vibe.web.ratelimit import client_ip_of, is_trusted

log = logging.getLogger("vibe.geo")

CACHE_SIZE = 16384  # client IPs -> country, per database version
# Learner-facing: these paths and everything under them, but for the exceptions below.
COVERED = ("/functions/v1/user-management", "/functions/v1/analytics-tracking",
           "/functions/v1/email-notifications", "/v1")
NEVER = frozenset({"/functions/v1/email-notifications/events"})  # Resend's signed delivery webhook
_UNDER = tuple(prefix + "/" for prefix in COVERED)
RULES = {"blocked_countries": "GEO_BLOCKED_COUNTRIES", "allowed_countries": "GEO_ALLOWED_COUNTRIES",
         "block_unknown": "GEO_BLOCK_UNKNOWN"}


def enabled(settings: Settings) -> bool:
    return bool(settings.web.geo_country_header or settings.web.geoip_database)


def covered(path: str) -> bool:
    """Does the rule apply to this path? Health probes and the signed webhooks never."""
    if path in NEVER or path.endswith("/health"):
        return False
    return path.startswith(_UNDER) or path in COVERED


def code_of(value: Any) -> str | None:
    """An ISO 3166 alpha-2 code, uppercase, or None."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        code = value.upper()
        return None if code == "XX" else code  # XX: Cloudflare's "unknown"
    return None


def country_of(record: Any) -> str | None:
    """The country of a database record: GeoLite2's and DB-IP's `country.iso_code`, else the
    network's `registered_country`; a flat `country_code`/`country` string for other layouts."""
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        value = record.get(key)
        code = code_of(value.get("iso_code") if isinstance(value, dict) else value)
        if code:
            return code
    return code_of(record.get("country_code"))


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _open(path: str) -> maxminddb.Reader:
    """The reader of a private copy of the file, memory-mapped (MaxMind's C reader). Mapping the
    file itself would let a `cp` over it (truncate, then write) pull the pages from under the
    reader: SIGBUS. The copy is unlinked at once; the mapping keeps it until the reader closes."""
    try:
        data = Path(path).read_bytes()
        fd, private = tempfile.mkstemp(prefix="vibe-geoip-", suffix=".mmdb")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return maxminddb.open_database(private)
        finally:
            os.unlink(private)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"GEOIP_DATABASE: {path}: cannot be opened as a MaxMind database ({exc})") from None


class CountryDatabase:
    """One MaxMind-format file, reopened when it changes; `lookup(ip)` is cached."""

    def __init__(self, path: str):
        self.path = path
        self.stamp = _stamp(path)
        self.reader = _open(path)
        self.loads = 1
        self.error = ""  # why the last new file was not taken
        self.lookup = functools.lru_cache(maxsize=CACHE_SIZE)(self._lookup)

    def _lookup(self, ip: str) -> str | None:
        try:
            return country_of(self.reader.get(ip))
        except (ValueError, maxminddb.InvalidDatabaseError):  # not an address ("unknown" peer)
            return None

    def reload_if_changed(self) -> bool:
        """Reopen the file if it changed since it was read; True when a new version was taken."""
        try:
            stamp = _stamp(self.path)
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}; still using the version loaded before"
            return False
        if stamp == self.stamp:
            return False
        self.stamp = stamp  # a broken file is tried again when it changes again, not every check
        try:
            reader = _open(self.path)
        except ConfigError as exc:
            self.error = f"{str(exc).split(': ', 1)[1]}; still using the version loaded before"
            log.warning("GeoIP database not reloaded: %s", self.error)
            return False
        old, self.reader = self.reader, reader
        self.lookup = functools.lru_cache(maxsize=CACHE_SIZE)(self._lookup)
        old.close()
        self.loads, self.error = self.loads + 1, ""
        log.info("GeoIP database reloaded: %s", self.describe())
        return True

    def describe(self) -> dict[str, Any]:
        meta = self.reader.metadata()
        built = dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC)
        return {"path": self.path, "type": meta.database_type, "built": built.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ip_version": meta.ip_version, "loads": self.loads,
                "cache": {"entries": self.lookup.cache_info().currsize}}

    def close(self) -> None:
        self.reader.close()


class Geo:
    """The country of a request and the rule that applies to it."""

    def __init__(self, settings: Settings):
        web_settings = settings.web
        self.header = web_settings.geo_country_header
        self.database = CountryDatabase(web_settings.geoip_database) if web_settings.geoip_database else None
        self.blocked = frozenset(web_settings.geo_blocked_countries)
        self.allowed = frozenset(web_settings.geo_allowed_countries)
        self.block_unknown = web_settings.geo_block_unknown
        self.check_seconds = web_settings.geoip_check_seconds
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()  # (country, rule), /metrics

    @property
    def mode(self) -> str:
        return "+".join(m for m, on in (("header", self.header), ("database", self.database)) if on) or "off"

    def country(self, request: web.Request) -> str | None:
        if self.header and is_trusted(request.remote, request.app[TRUSTED_NETS]):
            code = code_of(request.headers.get(self.header))
            if code:
                return code
        if self.database is not None:
            return self.database.lookup(client_ip_of(request))
        return None

    def rule(self, country: str | None) -> str | None:
        """The rule that refuses this country, or None."""
        if country is None:
            return "block_unknown" if self.block_unknown else None
        if country in self.blocked:
            return "blocked_countries"
        if self.allowed and country not in self.allowed:
            return "allowed_countries"
        return None

    def decide(self, request: web.Request) -> tuple[str | None, str | None]:
        """(country, refusing rule or None): what the middleware does, without answering."""
        country = request[COUNTRY] = self.country(request)
        return country, (self.rule(country) if covered(request.path) else None)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "healthy", "mode": self.mode}
        if self.header:
            out["header"] = self.header
        if self.database is not None:
            out["database"] = self.database.describe()
            if self.database.error:
                out.update(status="degraded", error=self.database.error)
        out["rule"] = describe_rule(self.blocked, self.allowed, self.block_unknown)
        out["refused"] = sum(self.refused.values())
        return out


def describe_rule(blocked: frozenset | tuple, allowed: frozenset | tuple, block_unknown: bool) -> str:
    text = (f"refuse {','.join(sorted(blocked))}" if blocked else
            f"serve only {','.join(sorted(allowed))}" if allowed else "none")
    return text + (" and unknown countries" if block_unknown else "")


def state(settings: Settings) -> str:
    """One line for check-config: off, or the source and the rule."""
    w = settings.web
    if not enabled(settings):
        return "off (neither GEO_COUNTRY_HEADER nor GEOIP_DATABASE is set)"
    sources = [f"header {w.geo_country_header}"] * bool(w.geo_country_header) + \
              [f"database {w.geoip_database}"] * bool(w.geoip_database)
    return f"on: {' then '.join(sources)}; rule: " + \
        describe_rule(w.geo_blocked_countries, w.geo_allowed_countries, w.geo_block_unknown)


def refusal(request: web.Request, country: str | None, rule: str) -> web.Response:
    where = f"your country ({country})" if country else "a place this service cannot determine"
    return error_response(451, "geo_blocked", f"This service is not available from {where}.",
                          request.get(REQUEST_ID), details={"country": country, "rule": rule, "setting": RULES[rule]})


@web.middleware
async def geo_middleware(request: web.Request, handler):
    geo = request.app[GEO]
    country, rule = geo.decide(request)
    if rule is not None:
        geo.refused[(country or "unknown", rule)] += 1
        return refusal(request, country, rule)
    return await handler(request)


def middlewares(settings: Settings) -> list:
    """What `create_app` puts before the rate limiter: nothing when the feature is off."""
    return [geo_middleware] if enabled(settings) else []


async def _watch(database: CountryDatabase, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        database.reload_if_changed()


async def geo_ctx(app: web.Application) -> AsyncIterator[None]:
    geo = app.get(GEO)
    task = None
    if geo is not None and geo.database is not None:
        task = asyncio.create_task(_watch(geo.database, geo.check_seconds), name="geoip-reload")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await app[SHUTDOWN].stop("GeoIP reload", [task])
        if geo is not None and geo.database is not None:
            geo.database.close()


async def probe(app: web.Application) -> dict[str, Any]:
    geo = app.get(GEO)
    return geo.describe() if geo is not None else {"status": "healthy", "mode": "off"}


def setup(app: web.Application) -> None:
    """The lookup (the database is opened here: a file that will not open stops the start)."""
    settings = app[SETTINGS]
    if enabled(settings):
        app[GEO] = Geo(settings)
    app.cleanup_ctx.append(geo_ctx)
    health.register(app, "geo", probe)
