"""Test databases: a fresh one for each test, as cheaply as each database allows.

SQLite: a file migrated once per session, copied into each test's folder (0.3 ms a test
instead of 19 ms of migrating). PostgreSQL: a schema of its own per test (`PostgresSchemas`).
"""

from __future__ import annotations

import asyncio
import shutil
import urllib.parse
import uuid
from pathlib import Path

import psycopg2

from vibe.config import Settings
from vibe.db.database import create_database
from vibe.db.migrations import migrate
from vibe.ops.logs import current_request_id  # set while a request is handled


def migrate_now(url: str) -> None:
    async def run() -> None:
        db = create_database(Settings.from_env({"DATABASE_URL": url}))
        await db.open()
        try:
            await migrate(db)
        finally:
            await db.close()

    asyncio.run(run())


class SqliteTemplate:
    def __init__(self, folder: Path):
        self.path = folder / "template.db"
        migrate_now(f"sqlite:///{self.path}")

    def copy(self, folder: Path) -> str:
        target = folder / "vibe.db"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


class PostgresSchemas:
    """A schema of its own for each test, in DATABASE_URL's database (the service migrates it as
    it starts). Not a template database: `CREATE DATABASE … TEMPLATE` took 284 ms a test here
    (WAL_LOG; FILE_COPY was slower still), migrating a new schema 165 ms."""

    def __init__(self, url: str):
        self.url = url
        self.admin = psycopg2.connect(url)
        self.admin.autocommit = True

    def _run(self, sql: str) -> None:
        with self.admin.cursor() as cur:
            cur.execute(sql)

    def create(self) -> tuple[str, str]:
        """A fresh schema for one test: (the URL that selects it, its name). The URL's search_path
        is the service's DATABASE_SCHEMA when that is unset (vibe/db/settings.py), so a test's
        every service, command and connection uses the test's schema, and the row-security role
        is `<schema>_user`, which `drop` drops too."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self._run(f"CREATE SCHEMA {schema}")
        return with_param(self.url, "options", f"-csearch_path={schema}"), schema

    def drop(self, schema: str) -> None:
        self._run("SET lock_timeout = '10s'")
        self._run(f"DROP SCHEMA {schema} CASCADE")
        self._run(f"DROP ROLE IF EXISTS {schema}_user")  # server-wide: made by the test's migration

    def close(self) -> None:
        self.admin.close()


def with_param(url: str, key: str, value: str) -> str:
    """`url` with one more query parameter (libpq reads them as connection options)."""
    parts = urllib.parse.urlsplit(url)
    query = "&".join(q for q in (parts.query, urllib.parse.urlencode({key: value})) if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def count_request_queries(db) -> list[str]:
    """Record, from now on, each database call made on a request's behalf (the list it returns
    fills up): what proves that an answer (a preflight, a 451) asked nothing of the database."""
    calls: list[str] = []
    for name in ("fetchone", "fetchall", "fetchval", "execute", "executemany", "transaction"):
        original = getattr(db, name)

        def counting(*args, _original=original, _name=name, **kw):
            if current_request_id.get() is not None:
                calls.append(_name)
            return _original(*args, **kw)
        setattr(db, name, counting)
    return calls
