"""User-scoped SQL under PostgreSQL row-level security (sql/011_user_rls.postgresql.sql).

    async with db.transaction() as tx:
        async with as_user(tx, user_id):
            rows = await tx.fetchall("SELECT * FROM user_progress")   # only user_id's rows

Inside the block the transaction runs as the restricted role DATABASE_RLS_ROLE (`tx.rls_role`;
`vibe_user` for the schema `vibe`) with `vibe.user_id` set for the transaction, so the policies
filter every read and refuse writes for anyone else.
On leaving it the role is reset, so domain hooks announced afterwards (email, analytics) run
with the service's own rights. On SQLite there is no row security: the block changes nothing,
and the queries' own `WHERE user_id = ...` is the only filter.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from vibe.db.database import Database, Transaction
from vibe.db.settings import ident


@contextlib.asynccontextmanager
async def as_user(tx: Transaction, user_id: str) -> AsyncIterator[Transaction]:
    if tx.dialect != "postgresql":
        yield tx
        return
    # deferred: they travel with the block's first query, in the same round trip
    tx.defer("SELECT set_config('vibe.user_id', %s, true)", (user_id,))
    tx.defer(f"SET LOCAL ROLE {ident(tx.rls_role)}")
    yield tx  # on an error the transaction rolls back, and SET LOCAL with it
    tx.defer("RESET ROLE")
    tx.defer("SELECT set_config('vibe.user_id', '', true)")


@contextlib.asynccontextmanager
async def reading_as_user(db: Database, user_id: str) -> AsyncIterator[Database | Transaction]:
    """Reads scoped to one user: a transaction under row security on PostgreSQL; on SQLite the
    database itself, whose reads go to the reader connection and never wait for the writer."""
    if db.dialect != "postgresql":
        yield db
        return
    async with db.transaction() as tx:
        async with as_user(tx, user_id):
            yield tx
