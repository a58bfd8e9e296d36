"""Validate the environment as a deployment would: what is set, missing or wrong.

`check(env)` returns one `Row` per variable that matters. In production (`VIBE_ENV=production`)
the billing, identity and database variables are required, the Stripe key must be a live key
and URLs must be https; elsewhere a missing variable is only noted. `python run.py check-config`
prints the rows; `serve` refuses to start in production when any row is an error.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Callable, Mapping

from vibe.config import ConfigError, Settings

STRIPE_KEY = re.compile(r"^(sk|rk)_(live|test)_[A-Za-z0-9]{16,}$")
WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=_-]{16,}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SECRET_NAMES = ("KEY", "SECRET", "PASSWORD", "DSN")


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    state: str  # set, missing, wrong, unset (optional and not set)
    value: str
    note: str = ""

    @property
    def error(self) -> bool:
        return self.state in ("missing", "wrong")


# The start of a key that says its kind and nothing secret (Stripe, Svix/Resend, Supabase, Resend).
PUBLIC_PREFIX = re.compile(r"^(sk_live_|sk_test_|rk_live_|rk_test_|whsec_|sb_secret_|re_)")


def mask(name: str, value: str) -> str:
    """What check-config may show of a value: a secret's kind and length, never a character of
    the secret itself; a URL's scheme, host and path, without user or password."""
    if not value:
        return ""
    if name in ("DATABASE_URL", "SENTRY_DSN"):
        parts = urllib.parse.urlsplit(value)
        return f"{parts.scheme}://…@{parts.hostname or ''}{parts.path}" if parts.scheme else "…"
    if any(part in name for part in SECRET_NAMES):
        prefix = PUBLIC_PREFIX.match(value)
        return f"{prefix.group(1) if prefix else ''}… ({len(value)} characters)"
    return value


def url_problem(value: str, production: bool) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http(s) URL"
    if production and parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "use https in production"
    return ""


def check(env: Mapping[str, str]) -> list[Row]:
    production = env.get("VIBE_ENV", "").strip().lower() == "production"
    rows: list[Row] = []

    def row(name: str, required: bool, validate: Callable[[str], str] | None = None, hint: str = "") -> None:
        value = env.get(name, "").strip()
        if not value:
            rows.append(Row(name, "missing" if required else "unset", "", "required in production" if required else hint))
            return
        problem = validate(value) if validate else ""
        rows.append(Row(name, "wrong" if problem else "set", mask(name, value), problem or hint))

    def stripe_key(value: str) -> str:
        m = STRIPE_KEY.match(value)
        if not m:
            return "expected sk_live_… or sk_test_… (or a restricted rk_ key)"
        if production and m.group(2) != "live":
            return "a test key in production: use sk_live_…"
        return ""

    def webhook_secrets(value: str) -> str:
        bad = [s for s in (p.strip() for p in value.split(",")) if s and not WEBHOOK_SECRET.match(s)]
        return "expected whsec_… (comma-separated for rotation)" if bad else ""

    def database(value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            return "" if urllib.parse.urlsplit(value).hostname or "host=" in value else "no host in the URL"
        if value.startswith("sqlite:"):
            return "production runs on PostgreSQL" if production else ""
        return "expected postgresql://… or sqlite:///path"

    row("VIBE_ENV", False, lambda v: "" if v.lower() in ("development", "test", "production")
        else "expected development, test or production", "development when unset")
    row("DATABASE_URL", production, database, "SQLite in VIBE_DATA_DIR when unset")
    row("STRIPE_SECRET_KEY", production, stripe_key)
    row("STRIPE_WEBHOOK_SECRET", production, webhook_secrets, "generated and kept in VIBE_DATA_DIR when unset")
    row("SUPABASE_URL", production, lambda v: url_problem(v, production))
    row("SUPABASE_SERVICE_ROLE_KEY", production, lambda v: "" if v.count(".") == 2 or v.startswith("sb_secret_")
        else "expected a JWT (three dot-separated parts) or sb_secret_…")
    row("SUPABASE_JWT_SECRET", False, lambda v: "" if len(v) >= 32 else "shorter than 32 characters",
        "tokens are checked against SUPABASE_URL's JWKS")
    row("EMAIL_SERVICE_URL", False, lambda v: url_problem(v, production), "email goes to the local outbox folder")
    row("EMAIL_SERVICE_KEY", bool(env.get("EMAIL_SERVICE_URL", "").strip()) and production)
    row("ADMIN_EMAIL", production, lambda v: "" if EMAIL.match(v) else "expected an email address")
    row("ALERT_WEBHOOK", False, lambda v: url_problem(v, production), "no alerts are sent")
    row("SENTRY_DSN", False, lambda v: url_problem(v, False), "errors are only logged")
    row("DASHBOARD_PASSWORD", False, lambda v: "at least 12 characters in production"
        if production and len(v) < 12 else "", "the dashboard takes admin tokens only")
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        name = str(exc).split(":", 1)[0]
        rows = [r for r in rows if r.name != name]
        rows.append(Row(name, "wrong", mask(name, env.get(name, "")), str(exc).split(":", 1)[-1].strip()))
    return rows
