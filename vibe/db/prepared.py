"""Server-side prepared statements for the statements a process sends again and again.

psycopg2 binds parameters on the client, so every statement reaches PostgreSQL as new text that
it parses, analyses, rewrites and plans from scratch. For the webhook pipeline's statements
(CTEs over several tables, upserts) that was half of the server's CPU per event. A statement
this process has sent `threshold` times is prepared, once per connection that runs it
(`PREPARE vibe_n AS ...` with `$n` placeholders), and from then on goes out as
`EXECUTE vibe_n(literals)`: same client-side binding, same one round trip, no planning.

It must never change what a statement does:

- PREPARE runs inside its own savepoint, so a statement PostgreSQL cannot prepare (several
  commands in one string, a parameter whose type it cannot infer, an `IN %s` tuple) leaves the
  transaction as it was; that connection sends it unprepared from then on.
- A literal and a parameter can be typed differently: `SELECT %s` is an integer for `5` but a
  parameter there is inferred as text. So the types PostgreSQL inferred are read back at
  PREPARE, and every call checks its values against them: a value whose literal would not
  have had that type (an int where text was inferred, a float where integer was, an int out of
  an integer's range) is sent unprepared, as before.
- Prepared statements outlive a rolled-back transaction (PREPARE is not transactional), and a
  plan PostgreSQL invalidates (a migration, another search_path) is re-planned by the server.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any, Sequence

import cachetools
import psycopg2

log = logging.getLogger(__name__)

_PREPARABLE = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|VALUES)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"%[%s]?")
_NUMERIC = frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"})
_INEXACT = frozenset({"numeric", "real", "double precision"})
_RANGE = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_STATEMENT_ERRORS = {"42", "0A"}  # SQLSTATE classes: syntax or access rule, feature not supported
_names = itertools.count(1)


def numbered(sql: str) -> tuple[str, int] | None:
    """`sql` with psycopg2's `%s` as `$1, $2, ...` and `%%` as `%`, and the count; None when it
    has a placeholder psycopg2 would reject."""
    count = 0

    def number(match: re.Match) -> str:
        nonlocal count
        token = match.group()
        if token == "%%":
            return "%"
        if token != "%s":
            raise ValueError(token)
        count += 1
        return f"${count}"

    try:
        return _PLACEHOLDER.sub(number, sql), count
    except ValueError:
        return None


def fits(value: Any, pgtype: str) -> bool:
    """Would psycopg2's literal for `value` mean the same as `value` in a parameter PostgreSQL
    inferred as `pgtype`?"""
    kind = type(value)
    if value is None or kind is str:
        return True  # a quoted literal is of unknown type, resolved by context like a parameter
    if kind is bool:
        return pgtype == "boolean"
    if kind is int:
        limit = _RANGE.get(pgtype)
        return pgtype in _NUMERIC and (limit is None or -limit <= value < limit)
    if kind is float:
        return pgtype in _INEXACT
    if kind is list:
        return pgtype.endswith("[]")
    if kind is bytes or kind is memoryview:
        return pgtype == "bytea"
    return False


class Prepared:
    __slots__ = ("execute", "types")

    def __init__(self, name: str, types: Sequence[str]):
        self.execute = f"EXECUTE {name}({', '.join(['%s'] * len(types))})" if types else f"EXECUTE {name}"
        self.types = tuple(types)

    def accepts(self, params: Sequence[Any]) -> bool:
        return len(params) == len(self.types) and all(map(fits, params, self.types))


class Statements:
    """Use counts across the process; what is prepared lives on each connection."""

    def __init__(self, threshold: int, per_connection: int = 256):
        self.threshold = threshold
        self.per_connection = per_connection
        self._uses: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=2048)

    @staticmethod
    def on(conn: Any) -> dict[str, Prepared | None]:
        """The statements prepared on an aiopg connection (None: cannot be prepared there)."""
        found = getattr(conn, "_vibe_prepared", None)
        if found is None:
            found = conn._vibe_prepared = {}
        return found

    async def lookup(self, cur: Any, prepared: dict[str, Prepared | None], sql: str,
                     params: Sequence[Any]) -> Prepared | None:
        """The prepared form of `sql` on this connection, preparing it now if it has become hot;
        None to send it as it is."""
        if sql in prepared:
            return prepared[sql]
        if not self.threshold or not isinstance(params, (list, tuple)):
            return None
        uses = self._uses.get(sql, 0) + 1
        self._uses[sql] = uses
        if uses < self.threshold or len(prepared) >= self.per_connection or not _PREPARABLE.match(sql):
            return None
        body = sql.strip().rstrip(";")
        form = None if ";" in body else numbered(body)  # one statement only: PREPARE must not run a second
        if form is None or form[1] != len(params):
            prepared[sql] = None
            return None
        prepared[sql] = found = await self._prepare(cur, form[0])
        return found

    @staticmethod
    async def _prepare(cur: Any, text: str) -> Prepared | None:
        name = f"vibe_{next(_names)}"
        # The savepoint goes first, on its own: a syntax error fails a whole query string unrun.
        await cur.execute("SAVEPOINT vibe_prepare")
        try:
            await cur.execute(  # the newline ends a trailing -- comment in the statement
                f"PREPARE {name} AS {text}\n; RELEASE SAVEPOINT vibe_prepare; "
                f"SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = '{name}'")
        except psycopg2.Error as exc:
            if (getattr(exc, "pgcode", None) or "")[:2] not in _STATEMENT_ERRORS or cur.connection.closed:
                raise  # the connection or the transaction, not the statement
            await cur.execute("ROLLBACK TO SAVEPOINT vibe_prepare; RELEASE SAVEPOINT vibe_prepare")
            log.debug("sent as text, cannot be prepared (%s): %.200s", str(exc).splitlines()[0], text)
            return None
        (types,) = await cur.fetchone()
        return Prepared(name, types)
