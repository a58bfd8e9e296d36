"""Configuration: one frozen dataclass built from the environment.

Every variable is read here and nowhere else. A missing or malformed value raises
`ConfigError` with one line naming the variable; the CLI prints that line and exits 2.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import Mapping

TIERS = ("free", "starter", "pro", "expert")
LIVEMODES = ("any", "live", "test")
ENVIRONMENTS = ("development", "test", "production")
# -- users, rate limits and caches (issue 3)
DEFAULT_RATE_LIMITS = {"free": 100, "starter": 300, "pro": 1000, "expert": 5000, "admin": 10000}
# -- email (issue 5)
EMAIL_BACKENDS = ("outbox", "resend", "smtp")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _str(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _str(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _str(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _str(env, name).lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(env, name, default).lower() or default
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _list(env: Mapping[str, str], name: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(part.strip() for part in _str(env, name).split(sep) if part.strip())


def _price_tiers(env: Mapping[str, str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in _list(env, "STRIPE_PRICE_TIERS"):
        key, sep, tier = item.partition("=")
        tier = tier.strip().lower()
        if not sep or not key.strip() or tier not in TIERS:
            raise ConfigError(
                f"STRIPE_PRICE_TIERS: expected price_or_product_id=tier with tier in "
                f"{', '.join(TIERS)}, got {item!r}"
            )
        mapping[key.strip()] = tier
    return mapping


# -- users, rate limits and caches (issue 3)
def _rate_limits(env: Mapping[str, str]) -> dict[str, int]:
    """RATE_LIMITS=tier=requests_per_minute,...: overrides and additions to the defaults."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for item in _list(env, "RATE_LIMITS"):
        tier, sep, value = item.partition("=")
        tier = tier.strip().lower()
        if not sep or not tier or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"RATE_LIMITS: expected tier=requests_per_minute (a whole number >= 1), got {item!r}")
        limits[tier] = int(value)
    return limits


def _proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    import ipaddress

    for item in _list(env, "RATE_LIMIT_TRUSTED_PROXIES"):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"RATE_LIMIT_TRUSTED_PROXIES: expected IP addresses or CIDR networks, got {item!r}") from None
    return _list(env, "RATE_LIMIT_TRUSTED_PROXIES")


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value <= 1:
        raise ConfigError(f"{name}: expected a fraction above 0 and at most 1, got {value}")
    return value


def _database_url(env: Mapping[str, str], data_dir: Path) -> str:
    url = _str(env, "DATABASE_URL")
    if not url:
        return f"sqlite:///{data_dir / 'vibe.db'}"
    if url.startswith(("postgresql://", "postgres://")) or url.startswith("sqlite:///"):
        return url
    if url == "sqlite://:memory:" or url == "sqlite:///:memory:":
        return "sqlite:///:memory:"
    raise ConfigError(
        f"DATABASE_URL: expected postgresql://... or sqlite:///path, got {url.split('://')[0]!r}://..."
    )


# -- email (issue 5)
def _email_settings(env: Mapping[str, str]) -> dict:
    smtp = _str(env, "EMAIL_SMTP_URL")
    if smtp and not smtp.startswith(("smtp://", "smtps://")):
        raise ConfigError("EMAIL_SMTP_URL: expected smtp://[user:password@]host[:port] or smtps://...")
    backend = _choice(env, "EMAIL_BACKEND", "outbox", EMAIL_BACKENDS)
    if backend == "smtp" and not smtp:
        raise ConfigError("EMAIL_SMTP_URL: required when EMAIL_BACKEND=smtp")
    if backend == "resend" and not (_str(env, "EMAIL_SERVICE_URL") and _str(env, "EMAIL_SERVICE_KEY")):
        raise ConfigError("EMAIL_SERVICE_KEY: EMAIL_SERVICE_URL and EMAIL_SERVICE_KEY are required when EMAIL_BACKEND=resend")
    public = _str(env, "PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/") or "http://127.0.0.1:8080"
    if not public.startswith(("http://", "https://")):
        raise ConfigError(f"PUBLIC_URL: expected http(s)://host[/path], got {public!r}")
    sender = _str(env, "EMAIL_FROM", "Vibe Coding Bible <no-reply@localhost>")
    if "@" not in sender:
        raise ConfigError(f"EMAIL_FROM: expected an address such as 'Vibe <no-reply@example.com>', got {sender!r}")
    return dict(
        public_url=public,
        email_backend=backend,
        email_from=sender,
        email_smtp_url=smtp,
        email_webhook_secret=_str(env, "EMAIL_WEBHOOK_SECRET"),
        email_webhook_tolerance=_int(env, "EMAIL_WEBHOOK_TOLERANCE", 300, minimum=1),
        email_unsubscribe_secret=_str(env, "EMAIL_UNSUBSCRIBE_SECRET"),
        email_unsubscribe_ttl_days=_int(env, "EMAIL_UNSUBSCRIBE_TTL_DAYS", 60, minimum=1),
        email_unsubscribe_mailto=_str(env, "EMAIL_UNSUBSCRIBE_MAILTO"),
        email_max_attempts=_int(env, "EMAIL_MAX_ATTEMPTS", 8, minimum=1),
        email_retry_base_seconds=_float(env, "EMAIL_RETRY_BASE_SECONDS", 2.0),
        email_retry_max_seconds=_float(env, "EMAIL_RETRY_MAX_SECONDS", 3600.0),
        email_concurrency=_int(env, "EMAIL_CONCURRENCY", 8, minimum=1),
        email_poll_seconds=_float(env, "EMAIL_POLL_SECONDS", 1.0, minimum=0.01),
        email_send_timeout_seconds=_float(env, "EMAIL_SEND_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        email_lease_seconds=_float(env, "EMAIL_SENDING_LEASE_SECONDS", 300.0, minimum=1.0),
        email_breaker_threshold=_int(env, "EMAIL_BREAKER_THRESHOLD", 5, minimum=1),
        email_breaker_reset_seconds=_float(env, "EMAIL_BREAKER_RESET_SECONDS", 30.0, minimum=0.01),
        email_worker=_bool(env, "VIBE_EMAIL_WORKER", True),
        email_scheduler=_bool(env, "VIBE_EMAIL_SCHEDULER", True),
        email_schedule_seconds=_float(env, "EMAIL_SCHEDULE_SECONDS", 3600.0, minimum=0.05),
        email_expiring_days=_int(env, "EMAIL_EXPIRING_DAYS", 3, minimum=1),
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    env: str = "development"
    data_dir: Path = Path("var")
    database_url: str = "sqlite:///var/vibe.db"
    max_db_connections: int = 20
    db_idle_timeout_ms: int = 30000
    db_connection_timeout_ms: int = 10000
    db_connect_retries: int = 3
    db_prepare_threshold: int = 3

    supabase_url: str = ""
    supabase_service_role_key: str = ""
    supabase_jwt_secret: str = ""
    supabase_jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_leeway_seconds: int = 10
    stripe_secret_key: str = ""
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_webhook_tolerance: int = 300
    stripe_livemode: str = "any"
    stripe_price_tiers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    stripe_max_attempts: int = 8
    stripe_retry_base_seconds: float = 2.0
    stripe_retry_max_seconds: float = 3600.0
    stripe_wait_timeout_seconds: float = 7 * 86400.0
    stripe_poll_seconds: float = 1.0
    stripe_extra_event_types: tuple[str, ...] = ()
    stripe_worker: bool = True
    stripe_dispatch_concurrency: int = 0  # 0: 4 on PostgreSQL, 1 on SQLite
    referral_commission_rate: float = 0.20

    email_service_url: str = ""
    email_service_key: str = ""
    sentry_dsn: str = ""
    admin_email: str = ""
    alert_webhook: str = ""
    check_interval: int = 60

    # -- analytics (issue 4)
    analytics_write_key: str = ""
    analytics_batch_events: int = 100
    analytics_batch_wait_ms: float = 2.0
    analytics_commit_concurrency: int = 0
    analytics_max_queue: int = 20000
    analytics_retention_days: int = 395
    analytics_retention_interval: float = 3600.0
    analytics_refresh_seconds: float = 300.0
    analytics_cache_ttl: float = 60.0
    analytics_erasure_poll_seconds: float = 1.0
    # -- email (issue 5)
    public_url: str = "http://127.0.0.1:8080"
    email_backend: str = "outbox"
    email_from: str = "Vibe Coding Bible <no-reply@localhost>"
    email_smtp_url: str = ""
    email_webhook_secret: str = ""
    email_webhook_tolerance: int = 300
    email_unsubscribe_secret: str = ""
    email_unsubscribe_ttl_days: int = 60
    email_unsubscribe_mailto: str = ""
    email_max_attempts: int = 8
    email_retry_base_seconds: float = 2.0
    email_retry_max_seconds: float = 3600.0
    email_concurrency: int = 8
    email_poll_seconds: float = 1.0
    email_send_timeout_seconds: float = 30.0
    email_lease_seconds: float = 300.0
    email_breaker_threshold: int = 5
    email_breaker_reset_seconds: float = 30.0
    email_worker: bool = True
    email_scheduler: bool = True
    email_schedule_seconds: float = 3600.0
    email_expiring_days: int = 3

    plugin_dirs: tuple[str, ...] = ()
    disabled_plugins: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"

    # -- users, rate limits and caches (issue 3)
    jwks_cache_seconds: float = 600.0
    jwks_min_refresh_seconds: float = 30.0
    jwks_timeout_seconds: float = 5.0
    rate_limits: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    rate_limit_anonymous: int = 600
    rate_limit_service: int = 10000
    rate_limit_webhook_failures: int = 1000
    rate_limit_max_keys: int = 50_000
    rate_limit_trusted_proxies: tuple[str, ...] = ()
    rate_limit_shrink_order: tuple[str, ...] = ("anonymous", "free", "starter", "pro")
    rate_limit_shrink_factor: float = 0.5
    load_monitor_interval: float = 0.5
    load_lag_threshold: float = 0.2
    load_pool_wait_threshold: int = 5
    load_recovery_seconds: float = 5.0
    user_session_cache_mb: float = 10.0
    user_session_cache_seconds: float = 900.0
    content_cache_mb: float = 20.0
    content_cache_seconds: float = 1800.0
    query_cache_mb: float = 15.0
    query_cache_seconds: float = 300.0
    cache_fence_seconds: float = 0.5

    # -- operations: alerts, dashboard (issue 6)
    alert_check_seconds: float = 30.0
    alert_p95_seconds: float = 5.0
    alert_error_rate: float = 0.05
    alert_min_requests: int = 20
    alert_window_seconds: float = 300.0
    alert_cooldown_seconds: float = 900.0
    alert_timeout_seconds: float = 5.0
    dashboard_password: str = ""
    dashboard_refresh_seconds: int = 30

    # -- HTTP server limits (issue 7)
    http_keepalive_seconds: float = 30.0
    http_max_header_bytes: int = 8190
    http_max_headers: int = 64
    # how long the background work may take to stop at shutdown, all of it together
    shutdown_grace_seconds: float = 10.0

    @property
    def dialect(self) -> str:
        return "sqlite" if self.database_url.startswith("sqlite:") else "postgresql"

    @property
    def sqlite_path(self) -> str:
        return self.database_url[len("sqlite:///"):]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(_str(env, "VIBE_DATA_DIR", "var") or "var")
        rate = _float(env, "REFERRAL_COMMISSION_RATE", 0.20)
        if rate > 1:
            raise ConfigError(f"REFERRAL_COMMISSION_RATE: expected a fraction from 0 to 1, got {rate}")
        return cls(
            env=_choice(env, "VIBE_ENV", "development", ENVIRONMENTS),
            data_dir=data_dir,
            database_url=_database_url(env, data_dir),
            max_db_connections=_int(env, "MAX_DB_CONNECTIONS", 20, minimum=1),
            db_idle_timeout_ms=_int(env, "DB_IDLE_TIMEOUT", 30000, minimum=1),
            db_connection_timeout_ms=_int(env, "DB_CONNECTION_TIMEOUT", 10000, minimum=1),
            db_connect_retries=_int(env, "DB_CONNECT_RETRIES", 3),
            db_prepare_threshold=_int(env, "DB_PREPARE_THRESHOLD", 3),
            supabase_url=_str(env, "SUPABASE_URL").rstrip("/"),
            supabase_service_role_key=_str(env, "SUPABASE_SERVICE_ROLE_KEY"),
            supabase_jwt_secret=_str(env, "SUPABASE_JWT_SECRET"),
            supabase_jwks_url=_str(env, "SUPABASE_JWKS_URL")
            or (f"{_str(env, 'SUPABASE_URL').rstrip('/')}/auth/v1/.well-known/jwks.json" if _str(env, "SUPABASE_URL") else ""),
            jwt_issuer=_str(env, "JWT_ISSUER"),
            jwt_leeway_seconds=_int(env, "JWT_LEEWAY_SECONDS", 10),
            stripe_secret_key=_str(env, "STRIPE_SECRET_KEY"),
            stripe_webhook_secrets=_list(env, "STRIPE_WEBHOOK_SECRET"),
            stripe_webhook_tolerance=_int(env, "STRIPE_WEBHOOK_TOLERANCE", 300, minimum=1),
            stripe_livemode=_choice(env, "STRIPE_LIVEMODE", "any", LIVEMODES),
            stripe_price_tiers=_price_tiers(env),
            stripe_max_attempts=_int(env, "STRIPE_MAX_ATTEMPTS", 8, minimum=1),
            stripe_retry_base_seconds=_float(env, "STRIPE_RETRY_BASE_SECONDS", 2.0),
            stripe_retry_max_seconds=_float(env, "STRIPE_RETRY_MAX_SECONDS", 3600.0),
            stripe_wait_timeout_seconds=_float(env, "STRIPE_WAIT_TIMEOUT_SECONDS", 7 * 86400.0),
            stripe_poll_seconds=_float(env, "STRIPE_POLL_SECONDS", 1.0, minimum=0.01),
            stripe_extra_event_types=_list(env, "STRIPE_EXTRA_EVENT_TYPES"),
            stripe_worker=_bool(env, "VIBE_STRIPE_WORKER", True),
            stripe_dispatch_concurrency=_int(env, "STRIPE_DISPATCH_CONCURRENCY", 0),
            referral_commission_rate=rate,
            email_service_url=_str(env, "EMAIL_SERVICE_URL"),
            email_service_key=_str(env, "EMAIL_SERVICE_KEY"),
            sentry_dsn=_str(env, "SENTRY_DSN"),
            admin_email=_str(env, "ADMIN_EMAIL"),
            alert_webhook=_str(env, "ALERT_WEBHOOK"),
            check_interval=_int(env, "CHECK_INTERVAL", 60, minimum=1),
            # -- analytics (issue 4)
            analytics_write_key=_str(env, "ANALYTICS_WRITE_KEY"),
            analytics_batch_events=_int(env, "ANALYTICS_BATCH_EVENTS", 100, minimum=1),
            analytics_batch_wait_ms=_float(env, "ANALYTICS_BATCH_WAIT_MS", 2.0),
            analytics_commit_concurrency=_int(env, "ANALYTICS_COMMIT_CONCURRENCY", 0),
            analytics_max_queue=_int(env, "ANALYTICS_MAX_QUEUE", 20000, minimum=1),
            analytics_retention_days=_int(env, "ANALYTICS_RETENTION_DAYS", 395),
            analytics_retention_interval=_float(env, "ANALYTICS_RETENTION_INTERVAL", 3600.0, minimum=1.0),
            analytics_refresh_seconds=_float(env, "ANALYTICS_REFRESH_SECONDS", 300.0, minimum=1.0),
            analytics_cache_ttl=_float(env, "ANALYTICS_CACHE_TTL", 60.0),
            analytics_erasure_poll_seconds=_float(env, "ANALYTICS_ERASURE_POLL_SECONDS", 1.0, minimum=0.05),
            **_email_settings(env),
            plugin_dirs=_list(env, "VIBE_PLUGINS_DIRS", os.pathsep),
            disabled_plugins=_list(env, "VIBE_DISABLE_PLUGINS"),
            log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
            log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            # -- users, rate limits and caches (issue 3)
            jwks_cache_seconds=_float(env, "JWKS_CACHE_SECONDS", 600.0),
            jwks_min_refresh_seconds=_float(env, "JWKS_MIN_REFRESH_SECONDS", 30.0),
            jwks_timeout_seconds=_float(env, "JWKS_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            rate_limits=_rate_limits(env),
            rate_limit_anonymous=_int(env, "RATE_LIMIT_ANONYMOUS", 600, minimum=1),
            rate_limit_service=_int(env, "RATE_LIMIT_SERVICE", 10000, minimum=1),
            rate_limit_webhook_failures=_int(env, "RATE_LIMIT_WEBHOOK_FAILURES", 1000, minimum=1),
            rate_limit_max_keys=_int(env, "RATE_LIMIT_MAX_KEYS", 50_000, minimum=100),
            rate_limit_trusted_proxies=_proxies(env),
            rate_limit_shrink_order=_list(env, "RATE_LIMIT_SHRINK_ORDER") or ("anonymous", "free", "starter", "pro"),
            rate_limit_shrink_factor=_fraction(env, "RATE_LIMIT_SHRINK_FACTOR", 0.5),
            load_monitor_interval=_float(env, "LOAD_MONITOR_INTERVAL", 0.5, minimum=0.01),
            load_lag_threshold=_float(env, "LOAD_LAG_THRESHOLD", 0.2, minimum=0.001),
            load_pool_wait_threshold=_int(env, "LOAD_POOL_WAIT_THRESHOLD", 5, minimum=1),
            load_recovery_seconds=_float(env, "LOAD_RECOVERY_SECONDS", 5.0),
            user_session_cache_mb=_float(env, "USER_SESSION_CACHE_MB", 10.0, minimum=0.01),
            user_session_cache_seconds=_float(env, "USER_SESSION_CACHE_SECONDS", 900.0, minimum=0.01),
            content_cache_mb=_float(env, "CONTENT_CACHE_MB", 20.0, minimum=0.01),
            content_cache_seconds=_float(env, "CONTENT_CACHE_SECONDS", 1800.0, minimum=0.01),
            query_cache_mb=_float(env, "QUERY_CACHE_MB", 15.0, minimum=0.01),
            query_cache_seconds=_float(env, "QUERY_CACHE_SECONDS", 300.0, minimum=0.01),
            cache_fence_seconds=_float(env, "CACHE_FENCE_SECONDS", 0.5),
            # -- operations: alerts, dashboard (issue 6)
            alert_check_seconds=_float(env, "ALERT_CHECK_SECONDS", 30.0, minimum=0.01),
            alert_p95_seconds=_float(env, "ALERT_P95_SECONDS", 5.0, minimum=0.001),
            alert_error_rate=_fraction(env, "ALERT_ERROR_RATE", 0.05),
            alert_min_requests=_int(env, "ALERT_MIN_REQUESTS", 20, minimum=1),
            alert_window_seconds=_float(env, "ALERT_WINDOW_SECONDS", 300.0, minimum=60.0),
            alert_cooldown_seconds=_float(env, "ALERT_COOLDOWN_SECONDS", 900.0),
            alert_timeout_seconds=_float(env, "ALERT_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            dashboard_password=_str(env, "DASHBOARD_PASSWORD"),
            dashboard_refresh_seconds=_int(env, "DASHBOARD_REFRESH_SECONDS", 30, minimum=5),

            # -- HTTP server limits (issue 7)
            http_keepalive_seconds=_float(env, "HTTP_KEEPALIVE_SECONDS", 30.0, minimum=0.1),
            http_max_header_bytes=_int(env, "HTTP_MAX_HEADER_BYTES", 8190, minimum=1024),
            http_max_headers=_int(env, "HTTP_MAX_HEADERS", 64, minimum=16),
            shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.1),
        )


def ensure_webhook_secret(settings: Settings) -> tuple[Settings, bool]:
    """With no STRIPE_WEBHOOK_SECRET, load (or create once) a secret kept in the data folder.

    Returns the settings to use and whether the secret was generated for the embedded default.
    """
    if settings.stripe_webhook_secrets:
        return settings, False
    path = settings.data_dir / "stripe_webhook_secret"
    if path.exists():
        secret = path.read_text().strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret = "whsec_" + secrets.token_hex(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
    return dataclasses.replace(settings, stripe_webhook_secrets=(secret,)), True
