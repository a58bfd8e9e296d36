"""The web layer's settings: the HTTP server's limits, callers' tokens (and the anon key), which
browser origins may call (CORS), rate limits and load shedding, geographic restrictions, and the
shutdown deadline."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

from vibe.variables import ConfigError, Env, fraction, setting, url_problem

DEFAULT_RATE_LIMITS = {"free": 100, "starter": 300, "pro": 1000, "expert": 5000, "admin": 10000}


def _rate_limits(raw: str) -> dict[str, int]:
    """tier=requests_per_minute,...: overrides of and additions to the defaults."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        tier, sep, value = item.partition("=")
        tier = tier.strip().lower()
        if not sep or not tier or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"expected tier=requests_per_minute (a whole number >= 1), got {item!r}")
        limits[tier] = int(value)
    return limits


def _networks(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"expected IP addresses or CIDR networks, got {item!r}") from None
    return items


def _countries(raw: str) -> tuple[str, ...]:
    """ISO 3166-1 alpha-2 codes, comma-separated, in any case: uppercase, each once."""
    codes: list[str] = []
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        if not re.fullmatch(r"[A-Za-z]{2}", item):
            raise ConfigError(f"expected ISO 3166 alpha-2 country codes (two letters, comma-separated), got {item!r}")
        if item.upper() not in codes:
            codes.append(item.upper())
    return tuple(codes)


def _shrink_order(raw: str) -> tuple[str, ...]:
    """Tiers, and country groups `country:CC+CC` (the requests from those countries)."""
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        kind, sep, codes = item.partition(":")
        if sep and (kind.strip().lower() != "country" or not re.fullmatch(r"[A-Za-z]{2}(\+[A-Za-z]{2})*", codes)):
            raise ConfigError(f"expected a tier or country:CC+CC (ISO 3166 alpha-2 codes), got {item!r}")
    return tuple(f"country:{item.partition(':')[2].upper()}" if ":" in item else item for item in items)


# Every MaxMind DB file ends with its metadata, which starts with this marker (the format's spec).
MMDB_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"


def _mmdb(raw: str) -> str:
    """A readable MaxMind-format database file (checked here, so a wrong path stops the start)."""
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{raw}: no such file (expected a MaxMind-format country database, "
                          "e.g. GeoLite2-Country.mmdb; nothing is downloaded at run time)")
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 128 * 1024))
            tail = fh.read()
    except OSError as exc:
        raise ConfigError(f"{raw}: cannot be read ({exc.strerror or exc})") from None
    if MMDB_METADATA_MARKER not in tail:
        raise ConfigError(f"{raw}: not a MaxMind-format database (no metadata section)")
    return str(path)


def _header_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]+", raw):
        raise ConfigError(f"expected a header name such as CF-IPCountry, got {raw!r}")
    return raw


def _jwks_from_supabase(env: Env) -> str:
    supabase = env.get("SUPABASE_URL", "").strip().rstrip("/")
    return f"{supabase}/auth/v1/.well-known/jwks.json" if supabase else ""


def _service_role_key(value: str, production: bool) -> str:
    return "" if value.count(".") == 2 or value.startswith("sb_secret_") else \
        "expected a JWT (three dot-separated parts) or sb_secret_…"


def _jwt_secret(value: str, production: bool) -> str:
    return "" if len(value) >= 32 else "shorter than 32 characters"


def _anon_key(value: str, production: bool) -> str:
    return "" if value.count(".") == 2 or value.startswith("sb_publishable_") else \
        "expected a JWT (three dot-separated parts) or sb_publishable_…"


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s*]+")


def _origins(raw: str) -> tuple[str, ...]:
    """`*`, or origins (`scheme://host[:port]`, as a browser's Origin header names them), each once."""
    origins: list[str] = []
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        origin = item if item == "*" else item.rstrip("/").lower()
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(f"expected `*` or origins such as https://app.example.com (scheme://host[:port], "
                              f"no path), comma-separated, got {item!r}")
        if origin not in origins:
            origins.append(origin)
    return ("*",) if "*" in origins else tuple(origins)


def _default_origins(env: Env) -> tuple[str, ...]:
    """Any origin in development and test; none (no cross-origin access) in production."""
    return () if env.get("VIBE_ENV", "").strip().lower() == "production" else ("*",)


@dataclasses.dataclass(frozen=True)
class WebSettings:
    CONCERN = "web"

    # callers' tokens
    supabase_url: str = setting("SUPABASE_URL", "", "the Supabase project (its JWKS: "
                                "`$SUPABASE_URL/auth/v1/.well-known/jwks.json`)", parse=lambda raw: raw.rstrip("/"),
                                production=True, check=url_problem)
    supabase_service_role_key: str = setting("SUPABASE_SERVICE_ROLE_KEY", "", "the project's service-role key",
                                             secret=True, production=True, check=_service_role_key)
    supabase_jwt_secret: str = setting("SUPABASE_JWT_SECRET", "", "the legacy HS256 secret, for HS256 access "
                                       "tokens", secret=True, check=_jwt_secret,
                                       hint="tokens are checked against SUPABASE_URL's JWKS")
    supabase_jwks_url: str = setting("SUPABASE_JWKS_URL", "", "where the ES256/RS256/EdDSA keys are",
                                     derive=_jwks_from_supabase, default_text="from `SUPABASE_URL`")
    supabase_anon_key: str = setting("SUPABASE_ANON_KEY", "", "the project's anon key (a JWT with `role: anon`, "
                                     "or `sb_publishable_…`): a bearer token equal to it is an anonymous caller",
                                     secret=True, check=_anon_key)
    jwt_issuer: str = setting("JWT_ISSUER", "", "issuer to require of user tokens")
    jwt_leeway_seconds: int = setting("JWT_LEEWAY_SECONDS", 10, "clock leeway for `exp`, `nbf`, `iat`", minimum=0)
    jwks_cache_seconds: float = setting("JWKS_CACHE_SECONDS", 600.0, "how long fetched keys are fresh", minimum=0)
    jwks_min_refresh_seconds: float = setting("JWKS_MIN_REFRESH_SECONDS", 30.0, "least time between key fetches",
                                              minimum=0)
    jwks_timeout_seconds: float = setting("JWKS_TIMEOUT_SECONDS", 5.0, "a key fetch's timeout", minimum=0.1)

    # browsers on other origins (vibe/web/cors.py, docs/operations.md); billing's checkout and
    # portal redirect only to PUBLIC_URL's host or one of these
    cors_allowed_origins: tuple[str, ...] = setting(
        "CORS_ALLOWED_ORIGINS", ("*",), "origins whose browser pages may call the API (comma-separated; `*`: any)",
        parse=_origins, derive=_default_origins, default_text="`*` in development and test; none in production",
        hint="none in production (no cross-origin access), `*` elsewhere")

    # rate limits and load shedding
    rate_limits: Mapping[str, int] = setting("RATE_LIMITS", DEFAULT_RATE_LIMITS, "requests a minute per tier",
                                             parse=_rate_limits)
    rate_limit_anonymous: int = setting("RATE_LIMIT_ANONYMOUS", 600, "requests a minute per client IP without "
                                        "a user", minimum=1)
    rate_limit_service: int = setting("RATE_LIMIT_SERVICE", 10000, "requests a minute for the service role",
                                      minimum=1)
    rate_limit_webhook_failures: int = setting("RATE_LIMIT_WEBHOOK_FAILURES", 1000,
                                               "failed webhook signatures a minute per source", minimum=1)
    rate_limit_max_keys: int = setting("RATE_LIMIT_MAX_KEYS", 50_000, "buckets kept in the LRU (about 1 KB each)",
                                       minimum=100)
    rate_limit_trusted_proxies: tuple[str, ...] = setting(
        "RATE_LIMIT_TRUSTED_PROXIES", (), "IPs/CIDRs whose `X-Forwarded-For` is believed", parse=_networks)
    rate_limit_shrink_order: tuple[str, ...] = setting(
        "RATE_LIMIT_SHRINK_ORDER", ("anonymous", "free", "starter", "pro"), "which tiers shrink first under load; "
        "an entry `country:CC+CC` is the requests from those countries (needs geographic lookups)",
        parse=_shrink_order)
    rate_limit_shrink_factor: float = setting("RATE_LIMIT_SHRINK_FACTOR", 0.5, "how much a shrunk tier keeps",
                                              parse=fraction)
    load_monitor_interval: float = setting("LOAD_MONITOR_INTERVAL", 0.5, "seconds between load checks",
                                           minimum=0.01)
    load_lag_threshold: float = setting("LOAD_LAG_THRESHOLD", 0.2, "event-loop lag (seconds) that counts as "
                                        "overload", minimum=0.001)
    load_pool_wait_threshold: int = setting("LOAD_POOL_WAIT_THRESHOLD", 5, "requests waiting for a database "
                                            "connection that count as overload", minimum=1)
    load_recovery_seconds: float = setting("LOAD_RECOVERY_SECONDS", 5.0, "calm seconds before limits grow back",
                                           minimum=0)

    # geographic restrictions (vibe/web/geo.py, docs/operations.md)
    geo_country_header: str = setting(
        "GEO_COUNTRY_HEADER", "", "the header a CDN or proxy puts the client's country in (`CF-IPCountry`, "
        "`CloudFront-Viewer-Country`, `X-Vercel-IP-Country`), believed only from RATE_LIMIT_TRUSTED_PROXIES",
        parse=_header_name)
    geoip_database: str = setting(
        "GEOIP_DATABASE", "", "a MaxMind-format country database file (GeoLite2-Country, DB-IP country lite), "
        "reopened when the file changes", parse=_mmdb)
    geoip_check_seconds: float = setting("GEOIP_CHECK_SECONDS", 5.0, "how often GEOIP_DATABASE is checked for "
                                         "a new file", minimum=0.01)
    geo_blocked_countries: tuple[str, ...] = setting(
        "GEO_BLOCKED_COUNTRIES", (), "ISO 3166 alpha-2 codes refused with 451 on the learner-facing routes",
        parse=_countries)
    geo_allowed_countries: tuple[str, ...] = setting(
        "GEO_ALLOWED_COUNTRIES", (), "the only countries served on the learner-facing routes (instead of "
        "GEO_BLOCKED_COUNTRIES)", parse=_countries)
    geo_block_unknown: bool = setting("GEO_BLOCK_UNKNOWN", False, "refuse requests whose country is not known "
                                      "(private addresses, not in the database)")

    # the HTTP server
    keepalive_seconds: float = setting("HTTP_KEEPALIVE_SECONDS", 30.0, "close a connection idle this long (also "
                                       "bounds clients that send their headers slowly)", minimum=0.1)
    max_header_bytes: int = setting("HTTP_MAX_HEADER_BYTES", 8190, "longest request line or header", minimum=1024)
    max_headers: int = setting("HTTP_MAX_HEADERS", 64, "most headers in a request", minimum=16)
    shutdown_grace_seconds: float = setting(
        "SHUTDOWN_GRACE_SECONDS", 10.0, "at a stop, how long all background work together may take to finish "
        "(after `--shutdown-timeout` for requests); what is left is logged with its stack and cancelled",
        minimum=0.1)

    def __post_init__(self) -> None:
        if self.geo_blocked_countries and self.geo_allowed_countries:
            raise ConfigError("GEO_ALLOWED_COUNTRIES: set GEO_BLOCKED_COUNTRIES or GEO_ALLOWED_COUNTRIES, not both")
        source = self.geo_country_header or self.geoip_database
        rule = next((name for name, on in (("GEO_BLOCKED_COUNTRIES", self.geo_blocked_countries),
                                           ("GEO_ALLOWED_COUNTRIES", self.geo_allowed_countries),
                                           ("GEO_BLOCK_UNKNOWN", self.geo_block_unknown)) if on), "")
        if rule and not source:
            raise ConfigError(f"{rule}: needs GEO_COUNTRY_HEADER or GEOIP_DATABASE to know a request's country")
        groups = [e for e in self.rate_limit_shrink_order if e.startswith("country:")]
        if groups and not source:
            raise ConfigError(f"RATE_LIMIT_SHRINK_ORDER: {groups[0]} needs GEO_COUNTRY_HEADER or GEOIP_DATABASE")
        if self.geo_country_header and not self.rate_limit_trusted_proxies:
            raise ConfigError("GEO_COUNTRY_HEADER: it is believed only from RATE_LIMIT_TRUSTED_PROXIES, "
                              "which is empty")
