"""The database's settings (docs/operations.md): which database, and how the pool behaves."""

from __future__ import annotations

import dataclasses
import urllib.parse

from vibe.variables import ConfigError, Env, data_dir, setting


def _url(raw: str) -> str:
    if raw in ("sqlite://:memory:", "sqlite:///:memory:"):
        return "sqlite:///:memory:"
    if raw.startswith(("postgresql://", "postgres://", "sqlite:///")):
        return raw
    raise ConfigError(f"expected postgresql://... or sqlite:///path, got {raw.split('://')[0]!r}://...")


def _default_url(env: Env) -> str:
    return f"sqlite:///{data_dir(env) / 'vibe.db'}"


def _deployable(value: str, production: bool) -> str:
    if value.startswith(("postgresql://", "postgres://")):
        return "" if urllib.parse.urlsplit(value).hostname or "host=" in value else "no host in the URL"
    if value.startswith("sqlite:"):
        return "production runs on PostgreSQL" if production else ""
    return "expected postgresql://… or sqlite:///path"


@dataclasses.dataclass(frozen=True)
class DbSettings:
    CONCERN = "db"

    url: str = setting("DATABASE_URL", "sqlite:///var/vibe.db",
                       "`postgresql://user@host:5432/db` or `sqlite:///path/to/file.db`",
                       parse=_url, derive=_default_url, default_text="`sqlite:///$VIBE_DATA_DIR/vibe.db`",
                       credentials=True, production=True, check=_deployable,
                       hint="SQLite in VIBE_DATA_DIR when unset")
    max_connections: int = setting("MAX_DB_CONNECTIONS", 20, "PostgreSQL pool size", minimum=1)
    idle_timeout_ms: int = setting("DB_IDLE_TIMEOUT", 30000, "ms before an idle pooled connection is recycled",
                                   minimum=1)
    connection_timeout_ms: int = setting(
        "DB_CONNECTION_TIMEOUT", 10000,
        "ms to wait for a connection (SQLite: for the write lock) before answering 503", minimum=1)
    connect_retries: int = setting("DB_CONNECT_RETRIES", 3, "connection attempts at start-up, with backoff",
                                   minimum=0)
    prepare_threshold: int = setting(
        "DB_PREPARE_THRESHOLD", 3,
        "PostgreSQL: a statement sent this many times is prepared on the server (0: never)", minimum=0)

    @property
    def dialect(self) -> str:
        return "sqlite" if self.url.startswith("sqlite:") else "postgresql"

    @property
    def sqlite_path(self) -> str:
        return self.url[len("sqlite:///"):]
