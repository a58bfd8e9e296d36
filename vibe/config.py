"""The app's settings: each concern's frozen settings, composed, read from the environment.

Each environment variable is declared once, as a field of its concern's settings class
(`vibe/<concern>/settings.py`, through `vibe.variables.setting`); `Settings` holds the few that
belong to the whole service and one object per concern (`settings.db.url`,
`settings.email.backend`, ...). A missing or malformed value raises `ConfigError` with one line
naming the variable; the CLI prints that line and exits 2. `VARIABLES` lists every declaration,
for check-config and the README's configuration table (`markdown_table`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from vibe.analytics.settings import AnalyticsSettings
from vibe.billing.settings import TIERS, BillingSettings
from vibe.db.settings import DbSettings
from vibe.email.settings import EmailSettings
from vibe.ops.settings import OpsSettings
from vibe.users.settings import UsersSettings
from vibe.variables import (
    ConfigError,
    Var,
    base_url,
    data_dir,
    load,
    setting,
    variables,
)
from vibe.web.settings import WebSettings

__all__ = ["TIERS", "VARIABLES", "ConfigError", "Settings", "ensure_jwt_secret", "ensure_webhook_secret",
           "markdown_table"]

ENVIRONMENTS = ("development", "test", "production")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Secrets that development generates and keeps in the data folder when none is configured.
WEBHOOK_SECRET_FILE, JWT_SECRET_FILE = "stripe_webhook_secret", "supabase_jwt_secret"

# The concerns' settings, in the order check-config and the README show them.
CONCERNS = {"db": DbSettings, "billing": BillingSettings, "web": WebSettings, "users": UsersSettings,
            "analytics": AnalyticsSettings, "email": EmailSettings, "ops": OpsSettings}
TITLES = {"service": "The service", "db": "Database", "billing": "Billing (Stripe)",
          "web": "Callers, rate limits and the HTTP server", "users": "User management's caches",
          "analytics": "Analytics", "email": "Email", "ops": "Operations"}


def _log_level(raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise ConfigError(f"expected one of {', '.join(LOG_LEVELS)}, got {raw.lower()!r}")
    return raw.upper()


@dataclasses.dataclass(frozen=True)
class Settings:
    CONCERN = "service"

    env: str = setting("VIBE_ENV", "development", "`development`, `test` or `production`",
                       choices=ENVIRONMENTS, hint="development when unset")
    data_dir: Path = setting(  # noqa: RUF009 (setting() returns a field)
        "VIBE_DATA_DIR", Path("var"), "local data: SQLite file, generated webhook secret, email outbox",
        parse=lambda raw: data_dir({"VIBE_DATA_DIR": raw}), default_text="`./var`")
    public_url: str = setting("PUBLIC_URL", "http://127.0.0.1:8080", "the service's public base address, for "
                              "links in mail and pages", parse=base_url,
                              default_text="the address `serve` listens on")
    plugin_dirs: tuple[str, ...] = setting("VIBE_PLUGINS_DIRS", (), "extra plugin folders, separated by `:`",
                                           sep=os.pathsep)
    disabled_plugins: tuple[str, ...] = setting("VIBE_DISABLE_PLUGINS", (),
                                                "plugin names not to load, comma-separated")
    log_level: str = setting("LOG_LEVEL", "INFO", "`debug`, `info`, `warning` or `error`",
                             parse=_log_level, default_text="`info`")
    log_format: str = setting("LOG_FORMAT", "text", "`json` for JSON lines on stderr", choices=("text", "json"))

    db: DbSettings = dataclasses.field(default_factory=DbSettings)
    billing: BillingSettings = dataclasses.field(default_factory=BillingSettings)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)
    users: UsersSettings = dataclasses.field(default_factory=UsersSettings)
    analytics: AnalyticsSettings = dataclasses.field(default_factory=AnalyticsSettings)
    email: EmailSettings = dataclasses.field(default_factory=EmailSettings)
    ops: OpsSettings = dataclasses.field(default_factory=OpsSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        core = load(cls, env)
        return dataclasses.replace(core, **{name: load(concern, env) for name, concern in CONCERNS.items()})


VARIABLES: tuple[Var, ...] = tuple(variables(Settings)) + tuple(
    var for concern in CONCERNS.values() for var in variables(concern))


def markdown_table() -> str:
    """The README's configuration section, from the declarations (a test keeps the two equal)."""
    lines: list[str] = []
    for concern, title in TITLES.items():
        lines += ["", f"**{title}**", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{v.name}` | {v.shown_default()} | {v.meaning}{' (secret)' if v.secret else ''} |"
                  for v in VARIABLES if v.concern == concern]
    return "\n".join(lines[1:]) + "\n"


def _kept_secret(settings: Settings, filename: str, make) -> str:
    """The secret kept in the data folder under `filename`, created (owner-only) on first use."""
    path = settings.data_dir / filename
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (a `token` beside `serve`) made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def ensure_webhook_secret(settings: Settings) -> tuple[Settings, bool]:
    """With no STRIPE_WEBHOOK_SECRET, load (or create once) a secret kept in the data folder.

    Returns the settings to use and whether the secret was generated for the embedded default.
    """
    if settings.billing.webhook_secrets:
        return settings, False
    secret = _kept_secret(settings, WEBHOOK_SECRET_FILE, lambda: "whsec_" + secrets.token_hex(24))
    billing = dataclasses.replace(settings.billing, webhook_secrets=(secret,))
    return dataclasses.replace(settings, billing=billing), True


def ensure_jwt_secret(settings: Settings) -> tuple[Settings, bool]:
    """In development, with neither SUPABASE_JWT_SECRET nor a JWKS to check tokens against, load
    (or create once) an HS256 secret kept in the data folder, so that `python run.py token` makes
    tokens the local service accepts. Production and a configured Supabase project are left as
    they are. Returns the settings to use and whether the secret is the generated one."""
    if settings.web.supabase_jwt_secret or settings.web.supabase_jwks_url or settings.env == "production":
        return settings, False
    secret = _kept_secret(settings, JWT_SECRET_FILE, lambda: secrets.token_urlsafe(48))
    web = dataclasses.replace(settings.web, supabase_jwt_secret=secret)
    return dataclasses.replace(settings, web=web), True
