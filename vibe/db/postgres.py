"""PostgreSQL adapter: an aiopg pool.

aiopg connections are in autocommit mode; a transaction is an explicit BEGIN ... COMMIT on one
pooled connection (vibe/db/postgres_transaction.py), BEGIN sent with its first statement, and a
single statement outside a transaction (`db.fetchall`, `db.execute`, ...) is one round trip of
its own, committed by itself. The pool is sized by MAX_DB_CONNECTIONS, recycles idle connections after
DB_IDLE_TIMEOUT and waits at most DB_CONNECTION_TIMEOUT for a connection. Opening retries with
backoff; a connection the server dropped is discarded, and the next request opens a new one, so
the service recovers on its own when the database comes back.

Every connection sets its `search_path` to DATABASE_SCHEMA alone, so vibe's unqualified SQL
names only its own schema's tables, and tables of the same names elsewhere in the database (the
platform's `public.profiles`, say) are never read, written or altered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, AsyncIterator

import aiopg
import psycopg2

from vibe.db.database import Database, DatabaseUnavailable, Params, Transaction
from vibe.db.postgres_transaction import UNAVAILABLE, PostgresTransaction, is_unavailable
from vibe.db.prepared import Statements
from vibe.db.settings import ident

log = logging.getLogger(__name__)

_UNAVAILABLE, _is_unavailable = UNAVAILABLE, is_unavailable


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _keepalives(dsn: str) -> dict[str, int]:
    """TCP keepalives, where the URL sets none: a dead peer is noticed within about a minute."""
    if any(key.startswith("keepalives") for key in psycopg2.extensions.parse_dsn(dsn)):
        return {}
    return {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, dsn: str, *, maxsize: int, idle_timeout: float, connect_timeout: float,
                 connect_retries: int = 3, prepare_threshold: int = 3, schema: str = "vibe",
                 rls_role: str = "vibe_user"):
        self.dsn = dsn
        self.schema = schema
        self.rls_role = rls_role
        self.statements = Statements(prepare_threshold)
        self.maxsize = maxsize
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self.lock_timeout = connect_timeout + 60  # what aiopg's per-query timeout was
        self._pool: aiopg.Pool | None = None
        self._waiting = 0

    async def open(self) -> None:
        delay = 0.5
        for attempt in range(self.connect_retries + 1):
            try:
                # libpq ignores connect_timeout on a non-blocking connect: bound it here
                async with asyncio.timeout(self.connect_timeout):
                    self._pool = await aiopg.create_pool(
                        self.dsn, minsize=1, maxsize=self.maxsize, timeout=None, on_connect=self._on_connect,
                        pool_recycle=self.idle_timeout, enable_hstore=False, enable_json=False,
                        enable_uuid=False, connect_timeout=max(1, int(self.connect_timeout)),
                        **_keepalives(self.dsn),
                    )
                return
            except _UNAVAILABLE as exc:
                if attempt == self.connect_retries:
                    raise DatabaseUnavailable(f"postgresql: cannot connect: {_oneline(exc)}") from exc
                log.warning("database not reachable (%s); retrying in %.1fs", _oneline(exc), delay)
                await asyncio.sleep(delay)
                delay *= 2

    async def _on_connect(self, conn: aiopg.Connection) -> None:
        """Bound waits on the server instead of in the client. aiopg's per-query timeout arms a
        timer and a future for each round trip (about 40 us of CPU here, more than the round
        trip itself). What it guarded against: a lock that is never released (lock_timeout
        does that here, as an ordinary error) and a network that went silent (TCP keepalives).
        Not statement_timeout: aiopg turns its error into a CancelledError. And the schema: the
        search_path is DATABASE_SCHEMA alone (behind a transaction pooler this does not stick:
        docs/operations.md says what to set there)."""
        cur = await conn.cursor()
        try:
            await cur.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}; "
                              f"SET search_path TO {ident(self.schema)}")
        finally:
            cur.close()

    async def close(self) -> None:
        """Close the idle connections, then wait until those in use come back and close them."""
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def abort(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        in_use = pool.size - pool.freesize
        if in_use:
            log.error("closing the pool with %d connection(s) still in use: their transactions roll back", in_use)
        pool.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # the idle ones close at once; one being opened may not
                await pool.wait_closed()

    def pool_state(self) -> dict[str, int]:
        pool = self._pool
        if pool is None:
            return {"size": 0, "in_use": 0, "waiting": self._waiting}
        return {"size": pool.size, "in_use": pool.size - pool.freesize, "waiting": self._waiting}

    async def _acquire(self) -> aiopg.Connection:
        if self._pool is None:
            raise DatabaseUnavailable("postgresql: pool is closed")
        self._waiting += 1
        try:
            for _ in range(3):
                try:
                    # Not asyncio.wait_for: on Python 3.11 it acquires in a task of its own, and a
                    # cancel that lands as that task gets its connection loses the connection:
                    # it stays "in use" for ever and the pool's close waits for it (issue 20).
                    async with asyncio.timeout(self.connect_timeout):
                        return await self._pool.acquire()
                except AssertionError:
                    # aiopg's `assert not conn.closed`: a pooled connection the server closed
                    # (pg_terminate_backend, a restart) while the pool was filling; aiopg has
                    # already dropped it, so take another.
                    continue
            raise DatabaseUnavailable("postgresql: the pool kept handing out closed connections")
        except asyncio.TimeoutError as exc:
            raise DatabaseUnavailable("postgresql: no connection free within DB_CONNECTION_TIMEOUT") from exc
        except RuntimeError as exc:  # aiopg: "Cannot acquire connection after closing pool"
            raise DatabaseUnavailable("postgresql: pool is closed") from exc
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
        finally:
            self._waiting -= 1

    async def _release(self, conn: aiopg.Connection, broken: bool = False) -> None:
        if not conn.closed and (
            broken or conn.raw.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        ):
            conn.close()  # never hand a broken or half-finished transaction to the next caller
        if self._pool is not None:
            await self._pool.release(conn)

    async def _connection(self) -> tuple[aiopg.Connection, aiopg.Cursor]:
        """A pooled connection and a cursor on it."""
        conn = await self._acquire()
        try:
            return conn, await conn.cursor()
        except BaseException as exc:  # cancelled too: else the connection stays "in use" (issue 20)
            await self._release(conn, broken=True)
            if isinstance(exc, (psycopg2.Error, *_UNAVAILABLE)):
                raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
            raise

    @contextlib.asynccontextmanager
    async def _session(self, *, transaction: bool) -> AsyncIterator[PostgresTransaction]:
        """A connection for one unit of work. `transaction`: BEGIN, deferred (it goes with the
        first statement), then COMMIT, or ROLLBACK on an error; a transaction that sent nothing
        ends without a round trip. Else statements commit one by one (autocommit). A connection
        the server dropped while idle is replaced at the first round trip (see `_send`): then the
        idle ones are all closed, since they went the same way."""
        used = list(await self._connection())  # [connection, cursor]

        async def reconnect() -> aiopg.Cursor:
            used[1].close()
            await self._release(used[0], broken=True)
            used[0] = None
            if self._pool is not None:
                await self._pool.clear()
            used[:] = await self._connection()
            return used[1]

        broken = False
        try:
            tx = PostgresTransaction(used[1], self.statements, self.rls_role, prepare=transaction,
                                     reconnect=reconnect)
            if not transaction:
                yield tx
                return
            tx.defer("BEGIN")
            try:
                yield tx
                await tx.flush_collected()
                if not tx.begun and len(tx._deferred) > 1:
                    await tx.execute_deferred()  # first, alone: a first round trip never holds COMMIT
            except BaseException:
                tx.discard_deferred()
                if tx.begun and not used[0].closed:
                    with contextlib.suppress(*_UNAVAILABLE, psycopg2.Error):
                        await used[1].execute("ROLLBACK")
                raise
            if tx.begun:
                await tx.execute("COMMIT")  # with whatever is still deferred, in one round trip
            tx._run_after_commit()
        except (psycopg2.Error, *_UNAVAILABLE) as exc:
            broken = used[0] is None or not isinstance(exc, psycopg2.Error) or _is_unavailable(exc) \
                or bool(used[0].closed)
            if broken:
                raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
            raise
        finally:
            if used[0] is not None:
                used[1].close()
                await self._release(used[0], broken)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        return self._session(transaction=True)

    def one_statement(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """One write statement in autocommit: atomic and committed (durable) when its answer
        comes, in one round trip. On a pooled connection found dropped it is sent once more
        (`_send`); a write that had committed just before the drop then meets its own row, so
        it must be idempotent (the inbox's ON CONFLICT DO NOTHING)."""
        return self._session(transaction=False)

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """A read is one round trip, committed by itself (no BEGIN, no COMMIT); anything else
        runs in a transaction (whose first round trip can be sent again: see `_send`)."""
        if not _READ.match(sql):
            return await super().fetchall(sql, params)
        async with self._session(transaction=False) as tx:
            return await tx.fetchall(sql, params)


_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)
