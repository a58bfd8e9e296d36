"""SQLite adapter (aiosqlite): the embedded default.

One writer connection serialised by an asyncio lock (SQLite has one writer at a time anyway)
and, for files, one reader connection that reads committed data beside it (WAL mode).
`synchronous=FULL`: a committed transaction survives a crash of the process and of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Sequence

import aiosqlite

from vibe.db.database import (
    Database,
    DatabaseUnavailable,
    Params,
    Transaction,
    safe_params,
)

_FOR_UPDATE = re.compile(r"\s+FOR\s+UPDATE(\s+SKIP\s+LOCKED)?", re.IGNORECASE)
_BIGSERIAL = re.compile(r"\bBIGSERIAL\s+PRIMARY\s+KEY\b", re.IGNORECASE)
_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open")


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """PostgreSQL-style SQL as SQLite wants it."""
    sql = _FOR_UPDATE.sub("", sql)
    sql = _BIGSERIAL.sub("INTEGER PRIMARY KEY AUTOINCREMENT", sql)
    return sql.replace("%s", "?").replace("%%", "%")


def _wrap(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.OperationalError) and any(t in str(exc).lower() for t in _TRANSIENT):
        return DatabaseUnavailable(f"sqlite: {exc}")
    return exc


class SqliteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection):
        super().__init__()
        self._conn = conn

    async def _flush(self) -> None:
        """The deferred statements, one by one; each counts as sent as it goes."""
        while self._deferred:
            sql, params = self._deferred[0]
            self._hand_over(1)
            await self._execute(sql, params)

    async def execute(self, sql: str, params: Params = None) -> int:
        await self._flush()
        return await self._execute(sql, params)

    async def _execute(self, sql: str, params: Params) -> int:
        try:
            cursor = await self._conn.execute(translate(sql), tuple(safe_params(params or ())))
            count = cursor.rowcount
            await cursor.close()
            return count
        except sqlite3.Error as exc:
            raise _wrap(exc) from exc

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        await self._flush()
        try:
            rows = await self._conn.execute_fetchall(translate(sql), tuple(safe_params(params or ())))
        except sqlite3.Error as exc:
            raise _wrap(exc) from exc
        return [dict(row) for row in rows]

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        await self._flush()
        try:
            await self._conn.executemany(translate(sql), [tuple(safe_params(p)) for p in seq])
        except sqlite3.Error as exc:
            raise _wrap(exc) from exc


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str, busy_timeout_ms: int = 5000):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        return conn

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            if self.path != ":memory:":
                self._reader = await self._connect()
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"sqlite: cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    def pool_state(self) -> dict[str, int]:
        return {"size": 1 if self._writer else 0, "in_use": int(self._lock.locked()), "waiting": self._waiting}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self._writer is None:
            raise DatabaseUnavailable("sqlite: database is closed")
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            tx = SqliteTransaction(self._writer)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                await tx.flush_collected()
                await tx.execute("COMMIT")  # a deferred statement that fails here rolls back too
            except BaseException:
                tx.discard_deferred()
                with contextlib.suppress(sqlite3.Error, DatabaseUnavailable):
                    await self._writer.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()
        tx._run_after_commit()  # committed, and the writer free again

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        if self._reader is None:
            return await super().fetchall(sql, params)
        return await SqliteTransaction(self._reader).fetchall(sql, params)
