"""PostgreSQL's transaction: statements, the deferred ones before them, in as few round trips as
can be (vibe/db/postgres.py opens and ends it on a pooled aiopg connection).

psycopg2 binds parameters on the client, so several statements go as one query string: the
deferred writes and savepoints ride with the next statement, and the hot statements go as
`EXECUTE` of a statement prepared on the connection (vibe/db/prepared.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Iterable, Sequence

import aiopg
import psycopg2

from vibe.db.database import Params, Transaction, safe_params
from vibe.db.prepared import Statements
from vibe.db.rowwrites import coalesce

# Errors that mean the server or the connection is gone (as opposed to a bad query).
UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionError, OSError)
_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08001", "08004"}
# Building a big round trip (a dispatcher batch's deferred writes: a few milliseconds of Python)
# lets the loop run other callbacks every this many seconds: requests waiting on the loop are
# what the webhooks' p99 is made of (bench/loop_probe).
BUILD_SLICE_SECONDS = 0.001


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, psycopg2.Error) and getattr(exc, "pgcode", None) in _UNAVAILABLE_CODES:
        return True
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, psycopg2.errors.QueryCanceled)


class PostgresTransaction(Transaction):
    dialect = "postgresql"

    def __init__(self, cursor: aiopg.Cursor, statements: Statements, rls_role: str = "vibe_user", *,
                 prepare: bool = True, reconnect: Callable[[], Awaitable[aiopg.Cursor]] | None = None):
        super().__init__()
        self.rls_role = rls_role  # the role of row_security.as_user
        self._cur = cursor
        self._statements = statements
        self._prepared = statements.on(cursor.connection)
        self._prepare = prepare  # False outside a transaction: PREPARE's guard is a savepoint
        self._reconnect = reconnect

    @property
    def begun(self) -> bool:
        """Has the server seen anything of this transaction yet (its deferred BEGIN first)?"""
        return self._handed > 0

    async def _send(self, statements: Iterable[tuple[str, Params]]) -> None:
        """`_build_and_send`; the first time, on a connection found gone, once more on another.

        A pooled connection the server dropped while it was idle (a restart, pg_terminate_backend)
        fails the transaction's first round trip, before any of its work was done; the caller
        never sends COMMIT in that trip (nor writes in one outside a transaction), so nothing of
        it can have been committed, and the same statements go again, built for a fresh
        connection (a statement prepared on the old one is not prepared there)."""
        if self._reconnect is None or self._handed:
            return await self._build_and_send(statements)
        statements, queue, reconnect = list(statements), list(self._deferred), self._reconnect
        self._reconnect = None  # once
        try:
            return await self._build_and_send(statements)
        except (psycopg2.Error, *UNAVAILABLE) as exc:
            if not (is_unavailable(exc) or self._cur.connection.closed):
                raise
        self._deferred, self._handed = queue, 0
        self._cur = await reconnect()
        self._prepared = self._statements.on(self._cur.connection)
        return await self._build_and_send(statements)

    async def _build_and_send(self, statements: Iterable[tuple[str, Params]]) -> None:
        """Run `statements` after the deferred ones, in one round trip (psycopg2 binds
        parameters on the client, so several statements go as one query string).

        Every part is built before anything counts as sent: a value the driver refuses (or a
        failing PREPARE) leaves the deferred queue untouched, savepoints included. A statement
        that has just become hot is prepared only after what precedes it has been sent, so a
        PREPARE never runs ahead of a deferred SAVEPOINT. A run of row writes goes merged
        (vibe.db.rowwrites) and in one round trip: nothing in it is prepared."""
        clock = time.perf_counter
        began = clock()
        queue = [*coalesce(self._deferred), *((sql, params, 0, False) for sql, params in statements)]
        parts: list[bytes] = []
        entries = 0  # how many of the deferred queue's statements `parts` holds
        mogrify, cur = self._cur.mogrify, self._cur
        for sql, params, stands_for, in_run in queue:
            if clock() - began > BUILD_SLICE_SECONDS:  # nothing is handed over yet: the queue stands as it was
                await asyncio.sleep(0)
                began = clock()
            if not params:
                parts.append(sql.encode())
                entries += stands_for
                continue
            params = safe_params(params)
            form = self._statements.find(self._prepared, sql, params, may_prepare=self._prepare and not in_run)
            if isinstance(form, str):  # to PREPARE now: what comes before it goes first
                if parts:
                    await self._trip(parts, entries)
                    parts, entries = [], 0
                form = await self._statements.prepare(cur, self._prepared, sql, form)
            if form is not None and form.accepts(params):
                parts.append(mogrify(form.execute, params))
            else:
                parts.append(mogrify(sql, params))
            entries += stands_for
        await self._trip(parts, entries)

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

    async def execute_deferred(self) -> None:
        """Send the deferred statements now, in one round trip."""
        await self._send([])

    async def execute(self, sql: str, params: Params = None) -> int:
        await self._send([(sql, params)])
        return self._cur.rowcount

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        await self._send([(sql, params)])
        cur = self._cur  # after: the first round trip may have gone on another connection
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
