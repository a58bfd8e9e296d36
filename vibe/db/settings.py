"""The database's settings (docs/operations.md): which database, its schema and row-security
role on PostgreSQL, and how the pool behaves."""

from __future__ import annotations

import dataclasses
import re
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


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED_ROLES = ("public", "none", "current_user", "current_role", "session_user")
# A search_path option in the URL: `options=-csearch_path=x` or `options=-c search_path=x`.
_URL_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search_path=([^\s]+)")
POOLER_PORTS = (6543,)  # Supabase's transaction pooler (Supavisor / PgBouncer)


def _schema(raw: str) -> str:
    if not _IDENTIFIER.fullmatch(raw):
        raise ConfigError("expected a plain SQL identifier (a-z, 0-9, _; not starting with a digit; "
                          f"at most 63 characters), got {raw!r}")
    if raw.startswith("pg_") or raw == "information_schema":
        raise ConfigError(f"{raw!r} is reserved by PostgreSQL")
    return raw


def _role(raw: str) -> str:
    if raw in _RESERVED_ROLES:
        raise ConfigError(f"{raw!r} is reserved by PostgreSQL")
    return _schema(raw)


def url_search_path(url: str) -> str:
    """The first schema that DATABASE_URL's `options=-csearch_path=…` selects ('' when none)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return ""
    options = " ".join(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("options", []))
    match = _URL_SEARCH_PATH.search(options)
    first = match.group(1).split(",")[0].strip('"') if match else ""
    return first if _IDENTIFIER.fullmatch(first) else ""


def _default_schema(env: Env) -> str:
    return url_search_path(env.get("DATABASE_URL", "").strip()) or "vibe"


def _default_role(env: Env) -> str:
    raw = env.get("DATABASE_SCHEMA", "").strip()
    schema = _schema(raw) if raw else _default_schema(env)
    if schema in ("vibe", "public"):  # public: what deployments before DATABASE_SCHEMA created
        return "vibe_user"
    role = f"{schema}_user"
    if len(role) > 63:
        raise ConfigError(f"DATABASE_RLS_ROLE: {role!r} is longer than 63 characters: set DATABASE_RLS_ROLE")
    return role


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def pooler_warnings(env: Env) -> list[str]:
    """What check-config warns about (not errors): a URL pointing at a transaction pooler while
    statements are prepared, and a URL whose search_path differs from DATABASE_SCHEMA."""
    url = env.get("DATABASE_URL", "").strip()
    if not url.startswith(("postgresql://", "postgres://")):
        return []
    found = []
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    pooled = port in POOLER_PORTS or "pgbouncer=true" in parts.query.lower()
    threshold = env.get("DB_PREPARE_THRESHOLD", "").strip() or "3"
    if pooled and threshold.lstrip("0") != "":
        where = f"port {port}" if port in POOLER_PORTS else "pgbouncer=true"
        found.append(f"the URL points at a transaction pooler ({where}): prepared statements and the per-connection "
                     "search_path do not survive it; set DB_PREPARE_THRESHOLD=0 and the role's search_path, "
                     "or use the direct port 5432 (docs/operations.md)")
    chosen, in_url = env.get("DATABASE_SCHEMA", "").strip(), url_search_path(url)
    if chosen and in_url and chosen != in_url:
        found.append(f"the URL's options select search_path {in_url!r} but DATABASE_SCHEMA is {chosen!r}: "
                     "vibe uses DATABASE_SCHEMA")
    return found


@dataclasses.dataclass(frozen=True)
class DbSettings:
    CONCERN = "db"

    url: str = setting("DATABASE_URL", "sqlite:///var/vibe.db",
                       "`postgresql://user@host:5432/db` or `sqlite:///path/to/file.db`",
                       parse=_url, derive=_default_url, default_text="`sqlite:///$VIBE_DATA_DIR/vibe.db`",
                       credentials=True, production=True, check=_deployable,
                       hint="SQLite in VIBE_DATA_DIR when unset")
    schema: str = setting(
        "DATABASE_SCHEMA", "vibe",
        "PostgreSQL: the schema that holds all of vibe's tables, views and migration ledger (created "
        "when missing; `public` allowed); every connection's `search_path`", parse=_schema,
        derive=_default_schema, default_text="`vibe` (or the schema the URL's `options=-csearch_path=` names)")
    rls_role: str = setting(
        "DATABASE_RLS_ROLE", "vibe_user",
        "PostgreSQL: the NOLOGIN role user-scoped work runs as under row-level security (created when "
        "missing, which needs CREATEROLE; granted only on DATABASE_SCHEMA)", parse=_role, derive=_default_role,
        default_text="`vibe_user` for schema `vibe` or `public`, else `<schema>_user`")
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
