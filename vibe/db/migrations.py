"""Numbered SQL migrations from `sql/`, applied in order, each once, each in one transaction.

`sql/NNN_name.sql` is portable SQL written for both databases. A version may add
`NNN_name.postgresql.sql` or `NNN_name.sqlite.sql` for what only one dialect has (row-level
security, materialized views); it runs after the portable file, in the same transaction.
Applied versions are recorded in `schema_migrations`; on PostgreSQL an advisory lock keeps two
instances starting at once from applying the same version twice.

On PostgreSQL everything lives in DATABASE_SCHEMA (the connections' search_path, so the SQL stays
unqualified), created here when missing, ledger included. A PostgreSQL file may name the schema
and the row-security role through placeholders, replaced before it runs: `{schema}` and
`{rls_role}` (quoted identifiers), `{rls_role_literal}` (the role's name as a string literal).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

from vibe.db.database import Database, Transaction
from vibe.db.settings import ident
from vibe.paths import SQL_DIR
from vibe.variables import ConfigError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+?)(?:\.(postgresql|sqlite))?\.sql$")
_SPLIT = re.compile(r";[ \t]*(?:--[^\n]*)?(?:\n|$)")
_LOCK_ID = 0x76696265  # "vibe"


@dataclasses.dataclass
class Migration:
    version: int
    name: str
    files: list[Path]

    def statements(self, dialect: str, names: dict[str, str] | None = None) -> list[str]:
        """The statements to run on `dialect`, with `names` (placeholders()) filled in."""
        out = []
        for path in self.files:
            m = _NAME.match(path.name)
            if m and m.group(3) not in (None, dialect):
                continue
            text = "\n".join(
                line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
            )
            for placeholder, value in (names or {}).items():
                text = text.replace("{" + placeholder + "}", value)
            out.extend(s.strip() for s in _SPLIT.split(text) if s.strip())
        return out


def placeholders(db: Database) -> dict[str, str]:
    """What `{schema}`, `{rls_role}` and `{rls_role_literal}` stand for in PostgreSQL files."""
    if db.dialect != "postgresql":
        return {}
    schema, role = getattr(db, "schema", "public"), getattr(db, "rls_role", "vibe_user")
    return {"schema": ident(schema), "rls_role": ident(role), "rls_role_literal": "'" + role.replace("'", "''") + "'"}


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"sql/{path.name}: expected NNN_name.sql or NNN_name.<dialect>.sql")
        version = int(m.group(1))
        mig = found.setdefault(version, Migration(version, m.group(2), []))
        if mig.name != m.group(2):
            raise ValueError(f"sql/: version {version} has two names: {mig.name}, {m.group(2)}")
        mig.files.append(path)
    for mig in found.values():  # portable file first, then the dialect's own
        mig.files.sort(key=lambda p: (p.name.count("."), p.name))
    return [found[v] for v in sorted(found)]


async def _ensure_schema(tx: Transaction, schema: str) -> None:
    """The schema, created when missing. Not CREATE SCHEMA IF NOT EXISTS alone: it asks for the
    database's CREATE privilege even when the schema exists (one a DBA made, say)."""
    if await tx.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)):
        return
    if schema != "public" and await tx.fetchval(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('public.schema_migrations') "
        "AND attname = 'applied_at' AND to_regclass('public.stripe_events') IS NOT NULL"
    ):
        # an earlier vibe, from before DATABASE_SCHEMA: a fresh empty schema would hide its data
        raise ConfigError(
            f"DATABASE_SCHEMA: vibe's tables are in the schema public, not {schema!r}: set DATABASE_SCHEMA=public "
            f"to go on using them, or move them (docs/operations.md, \"Sharing the platform's PostgreSQL\")")
    await tx.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    log.info("created the schema %s", schema)


async def _ensure_table(db: Database) -> None:
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            schema = getattr(db, "schema", "public")
            await _ensure_schema(tx, schema)
            current = await tx.fetchval("SELECT current_schema()")
            if current != schema:  # the search_path did not stick: a transaction pooler
                raise ConfigError(
                    f"DATABASE_SCHEMA: the connection's schema is {current!r}, not {schema!r}: behind a transaction "
                    "pooler set the role's search_path, or use the direct port (docs/operations.md)")
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )


async def _applied(tx: Transaction) -> set[int]:
    rows = await tx.fetchall("SELECT version FROM schema_migrations")
    return {int(r["version"]) for r in rows}


async def migrate(db: Database, directory: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the names applied."""
    migrations = discover(directory)
    names = placeholders(db)
    await _ensure_table(db)
    done: list[str] = []
    for mig in migrations:
        async with db.transaction() as tx:
            if db.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            if mig.version in await _applied(tx):
                continue
            for statement in mig.statements(db.dialect, names):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (mig.version, mig.name, time.time()),
            )
            done.append(f"{mig.version:03d}_{mig.name}")
            log.info("applied migration %03d_%s", mig.version, mig.name)
    return done


async def status(db: Database, directory: Path = SQL_DIR) -> list[dict]:
    await _ensure_table(db)
    async with db.transaction() as tx:
        applied = await _applied(tx)
    return [
        {"version": m.version, "name": m.name, "applied": m.version in applied} for m in discover(directory)
    ]
