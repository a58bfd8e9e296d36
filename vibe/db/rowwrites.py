"""Deferred writes of one row by its key, merged on PostgreSQL into one statement per table.

A webhook batch changes one profile and one subscription per event, and nobody reads the
result: each is a deferred statement (`Transaction.defer`), and fifty events used to send a
hundred of them in one round trip, each bound, sent and executed on its own. A write queued
with `defer_update` or `defer_upsert` is a `RowWrite`: still a `(sql, params)` pair, which is
what SQLite runs and what PostgreSQL sends when the write stands alone, but PostgreSQL's
transaction (`coalesce`, at send time) merges a *run* of them, row writes queued one after the
other with nothing else between, into one statement per table and kind, its rows as one JSON
parameter (`json_populate_recordset`, which takes the column types from the table).

Merging must not change what the writes do:

- Only a run is merged: any other deferred statement (a SAVEPOINT, `SET LOCAL ROLE`, a write
  of another kind) ends it, so nothing moves across a savepoint or a role, and a run always
  goes to the server in one round trip, as a whole.
- Inside a run, writes to *different* tables may change places: each addresses one row by its
  key and none reads another table (an UPDATE by key changes no key, so no foreign key sees
  the order). A table that gets both kinds (an UPDATE and an upsert) ends the run instead.
- Writes to the same row are combined in queue order, a later value replacing an earlier one,
  which is what running them one after another leaves; each row then appears once, so an
  upsert never meets its row twice (which PostgreSQL refuses) and an UPDATE never joins two.
- A write is merged only when every value means the same in JSON as bound as a literal: text,
  booleans, NULL, integers in BIGINT's range, and finite floats in the table's DOUBLE PRECISION
  columns (`KeyedTable.doubles`; a float bound to a BIGINT is rounded, in JSON it is an error).
  Any other value (a Decimal, a float for an integer column) sends that write as it is, and
  ends the run there.

Should a merged statement fail all the same, the transaction fails as a whole, as it would
have with the statement that failed among the hundred; the dispatcher then runs the batch's
events one transaction each (vibe/billing/dispatcher.py), where every write stands alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterable

from vibe.db.database import Params, Transaction, json_rows

_BIGINT = 2**63


@dataclasses.dataclass(frozen=True)
class KeyedTable:
    """A table whose deferred writes address one row by `key`."""

    table: str
    key: str
    doubles: frozenset[str] = frozenset()  # DOUBLE PRECISION columns: where a merged float may go


class RowWrite(tuple):
    """A deferred `(sql, params)` that writes one row by its key (see the module's notes)."""

    kind: str  # "update" or "upsert"
    target: KeyedTable
    key: Any
    fields: dict[str, Any]  # the columns it sets, the key not among them
    mergeable: bool

    def __new__(cls, kind: str, target: KeyedTable, key: Any, fields: dict[str, Any]) -> "RowWrite":
        names = tuple(fields)
        params = (*fields.values(), key)
        write = super().__new__(cls, (_single(kind, target, names), params))
        write.kind, write.target, write.key, write.fields = kind, target, key, fields
        write.mergeable = type(key) in (str, int) and _json_exact(target, {target.key: key, **fields})
        return write


def _json_exact(target: KeyedTable, values: dict[str, Any]) -> bool:
    for name, value in values.items():
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if -_BIGINT <= value < _BIGINT:
                continue
            return False
        if kind is float and name in target.doubles and math.isfinite(value):
            continue
        return False
    return True


@functools.lru_cache(maxsize=256)
def _single(kind: str, target: KeyedTable, names: tuple[str, ...]) -> str:
    if kind == "update":
        return f"UPDATE {target.table} SET {', '.join(f'{n} = %s' for n in names)} WHERE {target.key} = %s"
    columns = (*names, target.key)
    return (f"INSERT INTO {target.table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({target.key}) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}")


@functools.lru_cache(maxsize=256)
def _merged(kind: str, target: KeyedTable, names: tuple[str, ...]) -> str:
    rows = f"json_populate_recordset(NULL::{target.table}, %s::json)"
    if kind == "update":
        return (f"UPDATE {target.table} AS t SET {', '.join(f'{n} = v.{n}' for n in names)} "
                f"FROM {rows} AS v WHERE t.{target.key} = v.{target.key}")
    columns = ", ".join((*names, target.key))
    return (f"INSERT INTO {target.table} ({columns}) SELECT {columns} FROM {rows} "
            f"ON CONFLICT ({target.key}) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}")


def defer_update(tx: Transaction, target: KeyedTable, key: Any, fields: dict[str, Any]) -> None:
    """`UPDATE target SET fields WHERE key`, deferred (and merged with its neighbours)."""
    if fields:
        tx.defer_row(RowWrite("update", target, key, fields))


def defer_upsert(tx: Transaction, target: KeyedTable, key: Any, fields: dict[str, Any]) -> None:
    """Insert the row, or set `fields` on the one there: deferred (and merged with its neighbours)."""
    tx.defer_row(RowWrite("upsert", target, key, fields))


def coalesce(queue: Iterable[tuple[str, Params]]) -> list[tuple[str, Params, int, bool]]:
    """The deferred `queue` as it goes to PostgreSQL: `(sql, params, entries, in_run)`, where a
    run of row writes has become one statement per table and kind (and field set). `entries`
    is how many queued statements it stands for (the run's total sits on its first statement,
    the run going in one round trip); `in_run` marks the statements of a run of more than one,
    which must not be split across round trips (vibe.db.postgres_transaction prepares none of
    them)."""
    out: list[tuple[str, Params, int, bool]] = []
    run: list[RowWrite] = []
    kinds: dict[str, str] = {}  # table -> the kind of write the run has for it

    def close() -> None:
        if len(run) == 1:
            out.append((run[0][0], run[0][1], 1, False))
        elif run:
            out.extend(_merge(run))
        run.clear()
        kinds.clear()

    for entry in queue:
        if type(entry) is RowWrite and entry.mergeable:
            if kinds.setdefault(entry.target.table, entry.kind) != entry.kind:
                close()
                kinds[entry.target.table] = entry.kind
            run.append(entry)
            continue
        close()
        out.append((entry[0], entry[1], 1, False))
    close()
    return out


def _merge(run: list[RowWrite]) -> list[tuple[str, Params, int, bool]]:
    rows: dict[tuple[str, KeyedTable], dict[Any, dict[str, Any]]] = {}
    for write in run:  # each row once, later values over earlier ones
        by_key = rows.setdefault((write.kind, write.target), {})
        known = by_key.get(write.key)
        by_key[write.key] = write.fields if known is None else {**known, **write.fields}
    statements: list[tuple[str, Params, int, bool]] = []
    for (kind, target), by_key in rows.items():
        groups: dict[tuple[str, ...], list[tuple[Any, dict[str, Any]]]] = {}
        for key, fields in by_key.items():
            groups.setdefault(tuple(fields), []).append((key, fields))
        for names, members in groups.items():
            if len(members) == 1:
                key, fields = members[0]
                statements.append((_single(kind, target, names), (*fields.values(), key), 0, True))
                continue
            members.sort(key=lambda member: member[0])  # rows locked in key order, as concurrent batches do
            payload = json_rows((*names, target.key), [(*fields.values(), key) for key, fields in members])
            statements.append((_merged(kind, target, names), [payload], 0, True))
    first = statements[0]
    statements[0] = (first[0], first[1], len(run), True)
    return statements
