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
  transaction as it was; that connection sends it unprepared from then on. What comes before
  the statement in its round trip (the transaction's deferred writes and savepoints) is sent
  first, so a PREPARE that fails for another reason (a lock timeout during a migration) finds
  those savepoints on the server and the enclosing unit can roll back to them.
- Each connection keeps its `per_connection` most recently used statements (an LRU); one it
  evicts, and every one forgotten after a plan error, is DEALLOCATEd at its next PREPARE.
- A literal and a parameter can be typed differently: `SELECT %s` is an integer for `5` but a
  parameter there is inferred as text. So the types PostgreSQL inferred are read back at
  PREPARE, and every call checks its values against them: a value whose literal would not
  have had that type (an int where text was inferred, a float where integer was, an int out of
  an integer's range) is sent unprepared, as before.
- A statement that joins a batch of rows passed as JSON to a table (`UPDATE t SET ... FROM
  json_populate_recordset(...)`) is never prepared: its best plan depends on the table's size (a
  hash join over a scan of a small table, index probes into a large one), and the generic plan
  PostgreSQL caches for a prepared statement would keep the scan made while the table was small
  until an ANALYZE, scanning a growing inbox once per batch. Planned each time, it costs one
  plan per batch and always probes the index once the table is large.
- Prepared statements outlive a rolled-back transaction (PREPARE is not transactional), and a
  plan PostgreSQL invalidates (a migration, another search_path) is re-planned by the server.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
from typing import Any, Sequence

import cachetools
import psycopg2

log = logging.getLogger(__name__)

_PREPARABLE = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|VALUES)\b", re.IGNORECASE)
# UPDATE <table> [AS x] SET ... FROM <a JSON batch>; not an upsert's ON CONFLICT DO UPDATE SET
_JOINS_A_BATCH = re.compile(r"\bUPDATE\s+\w+(?:\s+AS\s+\w+)?\s+SET\b.*\bjson_(?:populate|to)_recordset\b|"
                            r"\bjson_(?:populate|to)_recordset\b.*\bUPDATE\s+\w+(?:\s+AS\s+\w+)?\s+SET\b",
                            re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"%[%s]?")
_NUMERIC = frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"})
_INEXACT = frozenset({"numeric", "real", "double precision"})
_RANGE = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
# SQLSTATE classes: syntax or access rule, feature not supported, no such prepared statement
_STATEMENT_ERRORS = {"42", "0A", "26"}
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
    __slots__ = ("execute", "name", "types")

    def __init__(self, name: str, types: Sequence[str]):
        self.name = name
        self.execute = f"EXECUTE {name}({', '.join(['%s'] * len(types))})" if types else f"EXECUTE {name}"
        self.types = tuple(types)

    def accepts(self, params: Sequence[Any]) -> bool:
        return len(params) == len(self.types) and all(map(fits, params, self.types))


class OnConnection:
    """What is prepared on one connection: an LRU of `capacity` statements (None: cannot be
    prepared there), and the names evicted or made stale that still await their DEALLOCATE."""

    __slots__ = ("capacity", "forms", "stale")

    def __init__(self, capacity: int):
        self.forms: collections.OrderedDict[str, Prepared | None] = collections.OrderedDict()
        self.capacity = capacity
        self.stale: list[str] = []

    def get(self, sql: str) -> Prepared | None | bool:
        """The form of `sql` (moved to the LRU's young end), or False when it has none yet."""
        forms = self.forms
        if sql not in forms:
            return False
        forms.move_to_end(sql)
        return forms[sql]

    def put(self, sql: str, form: Prepared | None) -> None:
        forms = self.forms
        forms[sql] = form
        forms.move_to_end(sql)
        while len(forms) > self.capacity:
            _, old = forms.popitem(last=False)
            if old is not None:
                self.stale.append(old.name)

    def clear(self) -> None:
        """Forget every form (a plan the server refuses); their names are deallocated later."""
        self.stale.extend(form.name for form in self.forms.values() if form is not None)
        self.forms.clear()

    def __len__(self) -> int:
        return len(self.forms)

    def __contains__(self, sql: str) -> bool:
        return sql in self.forms


class Statements:
    """Use counts across the process; what is prepared lives on each connection (`OnConnection`).

    The transaction asks `find` while it builds a round trip; when a statement has just become
    hot, it first sends what it has built so far (the deferred statements above all: a PREPARE
    that fails must find the savepoints before it already on the server), then calls `prepare`.
    """

    def __init__(self, threshold: int, per_connection: int = 256):
        self.threshold = threshold
        self.per_connection = per_connection
        self._uses: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=2048)

    def on(self, conn: Any) -> OnConnection:
        """The statements prepared on an aiopg connection."""
        found = getattr(conn, "_vibe_prepared", None)
        if found is None:
            found = conn._vibe_prepared = OnConnection(self.per_connection)
        return found

    def find(self, prepared: OnConnection, sql: str, params: Sequence[Any], *,
             may_prepare: bool = True) -> Prepared | None | str:
        """The prepared form of `sql` on this connection; None to send it as it is; or the
        numbered text to PREPARE now (it has just become hot). `may_prepare=False` (outside a
        transaction, where PREPARE has no savepoint to guard it): only a form prepared already."""
        form = prepared.get(sql)
        if form is not False:
            return form
        if not self.threshold or not may_prepare or not isinstance(params, (list, tuple)):
            return None
        uses = self._uses.get(sql, 0) + 1
        self._uses[sql] = uses
        if uses < self.threshold or not _PREPARABLE.match(sql):
            return None
        body = sql.strip().rstrip(";")
        numbered_form = None if ";" in body else numbered(body)  # one statement only: PREPARE must not run a second
        if numbered_form is None or numbered_form[1] != len(params) or _JOINS_A_BATCH.search(body):
            prepared.put(sql, None)
            return None
        return numbered_form[0]

    async def prepare(self, cur: Any, prepared: OnConnection, sql: str, text: str) -> Prepared | None:
        """PREPARE `text` (the form of `sql`) on the cursor's connection, after deallocating
        what the LRU evicted; remember and return the result."""
        if prepared.stale:
            await _deallocate(cur, prepared)
        found = await _prepare(cur, text)
        prepared.put(sql, found)
        return found


async def _guarded(cur: Any, sql: str, then: str = "") -> psycopg2.Error | None:
    """Run `sql` inside a savepoint of its own; an error of the statement's own making (see
    _STATEMENT_ERRORS) is rolled back and returned; any other is raised."""
    # The savepoint goes first, on its own: a syntax error fails a whole query string unrun.
    await cur.execute("SAVEPOINT vibe_prepare")
    try:
        # the newline ends a trailing -- comment; `then` runs in the same round trip
        await cur.execute(f"{sql}\n; RELEASE SAVEPOINT vibe_prepare{'; ' + then if then else ''}")
    except psycopg2.Error as exc:
        if (getattr(exc, "pgcode", None) or "")[:2] not in _STATEMENT_ERRORS or cur.connection.closed:
            raise  # the connection or the transaction, not the statement
        await cur.execute("ROLLBACK TO SAVEPOINT vibe_prepare; RELEASE SAVEPOINT vibe_prepare")
        return exc
    return None


async def _deallocate(cur: Any, prepared: OnConnection) -> None:
    names, prepared.stale = prepared.stale, []
    # DEALLOCATE is not transactional: what ran before an error stays deallocated.
    error = await _guarded(cur, "; ".join(f"DEALLOCATE {name}" for name in names))
    if error is not None:
        log.debug("deallocating %d statement(s): %s", len(names), str(error).splitlines()[0])


async def _prepare(cur: Any, text: str) -> Prepared | None:
    name = f"vibe_{next(_names)}"
    error = await _guarded(cur, f"PREPARE {name} AS {text}",
                           f"SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = '{name}'")
    if error is not None:
        log.debug("sent as text, cannot be prepared (%s): %.200s", str(error).splitlines()[0], text)
        return None
    (types,) = await cur.fetchone()
    return Prepared(name, types)
