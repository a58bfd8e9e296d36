"""PostgreSQL adapter: an aiopg pool.

aiopg connections are in autocommit mode; a transaction is an explicit BEGIN ... COMMIT on one
pooled connection. The pool is sized by MAX_DB_CONNECTIONS, recycles idle connections after
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
from typing import Any, AsyncIterator, Iterable, Sequence

import aiopg
import psycopg2

from vibe.db.database import (
    Database,
    DatabaseUnavailable,
    Params,
    Transaction,
    safe_params,
)
from vibe.db.prepared import Statements
from vibe.db.settings import ident

log = logging.getLogger(__name__)

# Errors that mean the server or the connection is gone (as opposed to a bad query).
_UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionError, OSError)
_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08001", "08004"}


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, psycopg2.Error) and getattr(exc, "pgcode", None) in _UNAVAILABLE_CODES:
        return True
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, psycopg2.errors.QueryCanceled)


def _keepalives(dsn: str) -> dict[str, int]:
    """TCP keepalives, where the URL sets none: a dead peer is noticed within about a minute."""
    if any(key.startswith("keepalives") for key in psycopg2.extensions.parse_dsn(dsn)):
        return {}
    return {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class PostgresTransaction(Transaction):
    dialect = "postgresql"

    def __init__(self, cursor: aiopg.Cursor, statements: Statements, rls_role: str = "vibe_user"):
        super().__init__()
        self.rls_role = rls_role  # the role of row_security.as_user
        self._cur = cursor
        self._statements = statements
        self._prepared = statements.on(cursor.connection)

    async def _send(self, statements: Iterable[tuple[str, Params]]) -> None:
        """Run `statements` after the deferred ones, in one round trip (psycopg2 binds
        parameters on the client, so several statements go as one query string).

        Every part is built before anything counts as sent: a value the driver refuses (or a
        failing PREPARE) leaves the deferred queue untouched, savepoints included. A statement
        that has just become hot is prepared only after what precedes it has been sent, so a
        PREPARE never runs ahead of a deferred SAVEPOINT."""
        queue = [*self._deferred, *statements]
        deferred = len(self._deferred)
        parts: list[bytes] = []
        first = 0  # queue[first:] has not been sent yet
        mogrify, cur = self._cur.mogrify, self._cur
        for index, (sql, params) in enumerate(queue):
            if not params:
                parts.append(sql.encode())
                continue
            params = safe_params(params)
            form = self._statements.find(self._prepared, sql, params)
            if isinstance(form, str):  # to PREPARE now: what comes before it goes first
                if parts:
                    await self._trip(parts, max(0, min(index, deferred) - first))
                    parts, first = [], index
                form = await self._statements.prepare(cur, self._prepared, sql, form)
            if form is not None and form.accepts(params):
                parts.append(mogrify(form.execute, params))
            else:
                parts.append(mogrify(sql, params))
        await self._trip(parts, max(0, deferred - first))

    async def _trip(self, parts: list[bytes], deferred: int) -> None:
        """One round trip; its first `deferred` parts are the queue's oldest deferred ones."""
        self._hand_over(deferred)  # from here on the server may have run them
        try:
            await self._cur.execute(b";\n".join(parts))
        except psycopg2.errors.FeatureNotSupported as exc:
            if "cached plan" in str(exc):
                # A migration changed what a prepared `SELECT *` returns. This unit of work
                # fails like any other; the connection prepares its statements afresh (and
                # deallocates the old ones at its next PREPARE).
                self._prepared.clear()
            raise

    async def execute(self, sql: str, params: Params = None) -> int:
        await self._send([(sql, params)])
        return self._cur.rowcount

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cur = self._cur
        await self._send([(sql, params)])
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in await cur.fetchall()]

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        # aiopg has no executemany. psycopg2 binds parameters on the client, so the statements
        # are bound one by one and sent together: one round trip for the whole batch.
        statements = [(sql, params) for params in seq]
        if statements:
            await self._send(statements)


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

    async def _begin(self) -> tuple[aiopg.Connection, aiopg.Cursor]:
        """A pooled connection inside BEGIN. A pooled connection the server dropped while idle
        (a restart, pg_terminate_backend) fails here, before any work: then the idle ones are
        all closed (they went the same way) and a fresh connection is tried once."""
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                cur = await conn.cursor()
                await cur.execute("BEGIN")
                return conn, cur
            except (psycopg2.Error, *_UNAVAILABLE) as exc:
                await self._release(conn, broken=True)
                if not (_is_unavailable(exc) or conn.closed):
                    raise
                if attempt == 2:
                    raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
                if self._pool is not None:
                    await self._pool.clear()
            except BaseException:
                # cancelled (a shutdown) while BEGIN was on its way: without this the connection
                # stayed "in use" for ever, and the pool's close waited for it (issue 20)
                await self._release(conn, broken=True)
                raise
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        conn, cur = await self._begin()
        broken = False
        try:
            tx = PostgresTransaction(cur, self.statements, self.rls_role)
            try:
                yield tx
                await tx.flush_collected()
            except BaseException:
                tx.discard_deferred()
                if not conn.closed:
                    with contextlib.suppress(*_UNAVAILABLE, psycopg2.Error):
                        await cur.execute("ROLLBACK")
                raise
            else:
                await tx.execute("COMMIT")  # with whatever is still deferred, in one round trip
                tx._run_after_commit()
        except psycopg2.Error as exc:
            if _is_unavailable(exc) or conn.closed:
                broken = True
                raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
            raise
        except _UNAVAILABLE as exc:
            broken = True
            raise DatabaseUnavailable(f"postgresql: {_oneline(exc)}") from exc
        finally:
            cur.close()
            await self._release(conn, broken)
