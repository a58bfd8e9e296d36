"""One small database interface over two drivers: aiopg (PostgreSQL) and aiosqlite (SQLite).

SQL is written once, PostgreSQL style, with `%s` placeholders. The SQLite adapter translates
what it must (placeholders, `BIGSERIAL`, `FOR UPDATE [SKIP LOCKED]`). Both adapters offer:

    async with db.transaction() as tx:       # BEGIN ... COMMIT, ROLLBACK on error
        await tx.execute(sql, params)         # -> rows affected
        await tx.fetchone(sql, params)        # -> dict | None
        await tx.fetchall(sql, params)        # -> list[dict]
        await tx.executemany(sql, seq)
        async with tx.savepoint(): ...        # a nested unit that can fail alone

and the same four calls on `db` itself, each in its own short transaction.

Driver errors that mean "the database is not there" become `DatabaseUnavailable`, which the
HTTP layer answers with 503 so that callers (Stripe, SDKs) retry.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import json
import logging
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence

from vibe.config import Settings

Params = Sequence[Any] | None
log = logging.getLogger(__name__)


REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def safe_text(value: str) -> str:
    """`value` with what no database text can hold replaced by U+FFFD: NUL (PostgreSQL's text
    refuses it) and lone surrogates (not encodable as UTF-8; neither driver binds them). Applied
    to every string parameter as it is bound, on both databases, so a handler's columns hold the
    same text everywhere, and one customer's odd name never fails a statement (issue 15)."""
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    return _UNSAFE.sub(REPLACEMENT, value)


def safe_params(params: Sequence[Any]) -> Sequence[Any]:
    """`params` with `safe_text` applied to its strings (and to those in lists and tuples)."""
    changed = None
    for index, value in enumerate(params):
        kind = type(value)
        if kind is str:
            if value.isascii() and "\x00" not in value:  # the common case, without a call
                continue
            new = safe_text(value)
        elif kind is list or kind is tuple:
            new = safe_params(value)
        else:
            continue
        if new is not value:
            if changed is None:
                changed = list(params)
            changed[index] = new
    if changed is None:
        return params
    return tuple(changed) if type(params) is tuple else changed


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused the work for a transient reason."""


class _Reads:
    """fetchone and fetchval, from the class's fetchall."""

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Params = None) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = None) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))


class Transaction(_Reads, abc.ABC):
    """A connection inside BEGIN ... COMMIT.

    `defer(sql, params)` queues a write whose result nobody needs; it is sent together with the
    next statement (on PostgreSQL in the same round trip), and always before it, so later reads
    in the transaction see it and COMMIT includes it. Savepoints are deferred the same way.

    A deferred statement counts as sent only once the round trip carrying it has been built and
    handed to the server (`_hand_over`): a statement that cannot be built (a value the driver
    refuses) or a PREPARE that fails first leaves the queue as it was, so a savepoint never
    rolls back to a name the server has not seen (issue 15). A savepoint whose unit ends
    before anything of it was sent is never sent at all.

    `collect(flush)` goes one step further for rows of one kind that many events of a batch
    write (analytics events, say): it returns the transaction's list for `flush`, and
    `flush(tx, items)` writes everything gathered in it once, just before COMMIT (or earlier,
    at `flush_collected()`). Items gathered inside a savepoint that rolls back are dropped.

    `after_commit(fn)` runs `fn()` once the transaction has committed (never when it rolls back,
    nor when registered inside a savepoint that rolled back): cache evictions go there, so no
    reader can load the old row again after them.
    """

    dialect: str
    rls_role = "vibe_user"  # PostgreSQL: the role of row_security.as_user (DATABASE_RLS_ROLE)
    _savepoints = itertools.count(1)

    def __init__(self) -> None:
        self._deferred: list[tuple[str, Params]] = []
        self._handed = 0  # deferred statements handed to the server so far (in queue order)
        self._collected: dict[Callable[["Transaction", list], Awaitable[None]], list] = {}
        self._after_commit: list[Callable[[], Any]] = []

    def collect(self, flush: Callable[["Transaction", list], Awaitable[None]]) -> list:
        """The list of items `flush` will write before COMMIT (append to it)."""
        items = self._collected.get(flush)
        if items is None:
            items = self._collected[flush] = []
        return items

    async def flush_collected(self) -> None:
        """Write what `collect` gathered, now (a flush may gather more: repeat until none is left)."""
        while any(self._collected.values()):
            for flush, items in list(self._collected.items()):
                if items:
                    taken = items[:]
                    items.clear()
                    await flush(self, taken)

    def after_commit(self, fn: Callable[[], Any]) -> None:
        """Call `fn()` after COMMIT succeeds (errors are logged, never raised)."""
        self._after_commit.append(fn)

    def _run_after_commit(self) -> None:
        hooks, self._after_commit = self._after_commit, []
        for fn in hooks:
            try:
                fn()
            except Exception:  # the transaction is committed: nothing to undo, only to report
                log.exception("after-commit hook %r failed", fn)

    def defer(self, sql: str, params: Params = None) -> None:
        self._deferred.append((sql, params))

    def defer_row(self, write: tuple[str, Params]) -> None:
        """Queue a `RowWrite` (vibe.db.rowwrites): deferred like `defer`, and on PostgreSQL
        merged with the row writes queued next to it."""
        self._deferred.append(write)

    def _hand_over(self, count: int) -> None:
        """The first `count` queued statements are on their way to the server (built, sent)."""
        if count:
            del self._deferred[:count]
            self._handed += count

    def discard_deferred(self) -> None:
        self._deferred = []

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = None) -> int: ...

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None: ...

    @staticmethod
    def _no_such_savepoint(exc: BaseException) -> bool:
        """The server says the savepoint does not exist (it never ran: the round trip that
        carried it failed as a whole, a syntax error say)."""
        return getattr(exc, "pgcode", None) == "3B001" or "no such savepoint" in str(exc)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator["Transaction"]:
        """A nested unit: on an exception, what it did is undone and the exception goes on."""
        name = f"sp_{next(self._savepoints)}"
        sequence = self._handed + len(self._deferred)  # the SAVEPOINT's place in the queue's order
        self.defer(f"SAVEPOINT {name}")
        gathered = {flush: len(items) for flush, items in self._collected.items()}
        hooks = len(self._after_commit)
        try:
            yield self
        except BaseException:
            for flush, items in self._collected.items():  # what was gathered inside is undone too
                del items[gathered.get(flush, 0):]
            del self._after_commit[hooks:]
            if self._handed <= sequence:  # the SAVEPOINT never left: forget it and what followed
                del self._deferred[sequence - self._handed:]
                raise
            self.discard_deferred()  # what is still queued was queued inside the savepoint
            unrun = False
            try:
                await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            except Exception as rollback_error:
                if not self._no_such_savepoint(rollback_error):
                    raise
                # The round trip that carried it failed unrun: the transaction is aborted and only
                # an enclosing savepoint (or the ROLLBACK) can undo it; the cause goes on.
                unrun = True
            if not unrun:
                self.defer(f"RELEASE SAVEPOINT {name}")
            raise
        if self._handed <= sequence:
            # Nothing inside reached the server: what it deferred is the enclosing unit's now, and
            # the SAVEPOINT goes unsent (a unit that made no round trip costs none, nor the server's
            # subtransaction). Had it failed, its statements would have been dropped unsent.
            del self._deferred[sequence - self._handed]
        else:
            self.defer(f"RELEASE SAVEPOINT {name}")


class Database(_Reads, abc.ABC):
    """A pool of connections to one database."""

    dialect: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def abort(self) -> None:
        """Close at once, connections still in use included (a shutdown past its grace)."""
        await self.close()

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    @abc.abstractmethod
    def pool_state(self) -> dict[str, int]:
        """`size`, `in_use`, `waiting` of the connection pool."""

    def one_statement(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """For a unit of work that is a single write statement (atomic by itself): committed
        when it returns. Here a transaction; PostgreSQL sends it alone, without BEGIN and COMMIT
        (one round trip instead of two). More than one statement in it is not atomic there."""
        return self.transaction()

    async def execute(self, sql: str, params: Params = None) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, seq)

    async def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    async def ping(self) -> float:
        """Round trip of a trivial query, in seconds; raises DatabaseUnavailable."""
        start = time.perf_counter()
        await self.fetchall("SELECT 1 AS ok")
        return time.perf_counter() - start


def rows_source(tx: Transaction, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
    """The source of a multi-row insert, and its parameters.

    PostgreSQL: the rows as one JSON parameter expanded by `json_populate_recordset` (column
    types come from the table), because psycopg2 formats every `%s` in Python and thousands of
    them cost more than the insert. SQLite binds parameters natively: plain `VALUES (...), ...`.
    """
    if tx.dialect == "postgresql":
        return (f"SELECT {', '.join(columns)} FROM json_populate_recordset(NULL::{table}, %s::json)",
                [json_rows(columns, rows)])
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    return f"VALUES {values}", [v for row in rows for v in row]


def json_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """`rows` as a JSON array of objects keyed by `columns`, their strings as `safe_text` binds them.

    json.dumps escapes every character outside ASCII, so a NUL or a surrogate anywhere in the
    rows shows in the text as `\\u0000` or `\\udXXX`. Only when one does (or an escaped
    backslash that looks like one, or a well-formed pair) are the rows encoded again from
    `safe_params`: one search of the text instead of a look at every value."""
    rows = list(rows)
    text = json.dumps([dict(zip(columns, row)) for row in rows], separators=(",", ":"))
    if "\\u0000" in text or "\\ud" in text:
        text = json.dumps([dict(zip(columns, safe_params(row))) for row in rows], separators=(",", ":"))
    return text


def any_of(tx: Transaction, column: str, values: Sequence[Any]) -> tuple[str, list]:
    """The condition "`column` is one of `values`" and its parameters: one array parameter on
    PostgreSQL (one statement text for any number of values, so it is prepared), a list of them
    on SQLite."""
    if tx.dialect == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def create_database(settings: Settings) -> Database:
    if settings.db.dialect == "sqlite":
        from vibe.db.sqlite import SqliteDatabase

        return SqliteDatabase(settings.db.sqlite_path, busy_timeout_ms=settings.db.connection_timeout_ms)
    from vibe.db.postgres import PostgresDatabase

    return PostgresDatabase(
        settings.db.url,
        maxsize=settings.db.max_connections,
        idle_timeout=settings.db.idle_timeout_ms / 1000,
        connect_timeout=settings.db.connection_timeout_ms / 1000,
        connect_retries=settings.db.connect_retries,
        prepare_threshold=settings.db.prepare_threshold,
        schema=settings.db.schema,
        rls_role=settings.db.rls_role,
    )
