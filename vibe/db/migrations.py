"""Numbered SQL migrations from `sql/`, applied in order, each once, each in one transaction.

`sql/NNN_name.sql` is portable SQL written for both databases. A version may add
`NNN_name.postgresql.sql` or `NNN_name.sqlite.sql` for what only one dialect has (row-level
security, materialized views); it runs after the portable file, in the same transaction.
Applied versions are recorded in `schema_migrations`; on PostgreSQL an advisory lock keeps two
instances starting at once from applying the same version twice.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

from vibe.db.database import Database, Transaction
from vibe.paths import SQL_DIR

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+?)(?:\.(postgresql|sqlite))?\.sql$")
_SPLIT = re.compile(r";[ \t]*(?:--[^\n]*)?(?:\n|$)")
_LOCK_ID = 0x76696265  # "vibe"


@dataclasses.dataclass
class Migration:
    version: int
    name: str
    files: list[Path]

    def statements(self, dialect: str) -> list[str]:
        out = []
        for path in self.files:
            m = _NAME.match(path.name)
            if m and m.group(3) not in (None, dialect):
                continue
            text = "\n".join(
                line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
            )
            out.extend(s.strip() for s in _SPLIT.split(text) if s.strip())
        return out


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


async def _ensure_table(db: Database) -> None:
    async with db.transaction() as tx:
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
    await _ensure_table(db)
    done: list[str] = []
    for mig in migrations:
        async with db.transaction() as tx:
            if db.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            if mig.version in await _applied(tx):
                continue
            for statement in mig.statements(db.dialect):
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
