"""The transaction layer (vibe/db/database.py and both adapters), issue 15: a deferred SAVEPOINT
counts as sent only once the round trip carrying it was built and handed over; a failing unit
inside a savepoint leaves the rest of the transaction working; text no database can hold is
bound as U+FFFD; after-commit hooks run after COMMIT only; a PREPARE never runs ahead of a
deferred SAVEPOINT. Both databases, real SQL."""

import contextlib
import sqlite3

import aiopg
import psycopg2
import pytest
from conftest import postgres_only

from vibe.config import Settings
from vibe.db.database import REPLACEMENT, create_database, rows_source, safe_text


async def open_db(database_url, threshold=1, per_connection=None):
    db = create_database(Settings.from_env({"DATABASE_URL": database_url, "MAX_DB_CONNECTIONS": "1",
                                            "DB_PREPARE_THRESHOLD": str(threshold)}))
    if per_connection is not None:
        db.statements.per_connection = per_connection
    await db.open()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE tl_items (id INTEGER PRIMARY KEY, name TEXT)")
    return db


@pytest.fixture
async def db(database_url):
    db = await open_db(database_url)
    yield db
    await db.close()


async def ids(db) -> list[int]:
    return [r["id"] for r in await db.fetchall("SELECT id FROM tl_items ORDER BY id")]


class Unbindable:
    """A parameter neither driver can bind: building the statement fails on the client."""


async def test_a_statement_that_cannot_be_built_inside_a_savepoint_fails_only_that_unit(db):
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (1,))
        with pytest.raises(Exception) as caught:
            async with tx.savepoint():  # deferred: it travels with the next statement, unbuilt
                await tx.execute("INSERT INTO tl_items (id, name) VALUES (%s, %s)", (2, Unbindable()))
        assert "savepoint" not in str(caught.value).lower()  # the cause, not a missing savepoint
        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (3,))
    assert await ids(db) == [1, 3]


async def test_after_a_built_statement_failed_the_savepoint_rolls_back_its_sent_work(db):
    async with db.transaction() as tx:
        with pytest.raises(Exception, match="adapt|type"):
            async with tx.savepoint():
                await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (1,))  # sent with SAVEPOINT
                await tx.execute("INSERT INTO tl_items (id, name) VALUES (%s, %s)", (2, Unbindable()))
        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (4,))
    assert await ids(db) == [4]


async def test_a_round_trip_that_fails_unrun_hands_the_cause_to_the_enclosing_savepoint(db):
    """A syntax error fails a whole PostgreSQL query string unrun, the inner SAVEPOINT with it:
    the inner unit cannot roll back, so the original error goes on to the outer one, which can."""
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (1,))
        with pytest.raises(Exception) as caught:
            async with tx.savepoint():
                await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (2,))
                async with tx.savepoint():
                    await tx.execute("INSRT INTO tl_items (id) VALUES (%s)", (3,))
        assert "syntax error" in str(caught.value).lower(), caught.value
        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (5,))
    assert await ids(db) == [1, 5]


async def test_many_failing_units_in_one_transaction_leave_the_others(db):
    async with db.transaction() as tx:
        for i in range(1, 21):
            with contextlib.suppress(psycopg2.Error, sqlite3.Error):
                async with tx.savepoint():
                    await tx.execute("INSERT INTO tl_items (id, name) VALUES (%s, %s)",
                                     (i, Unbindable() if i % 3 == 0 else f"n{i}"))
    assert await ids(db) == [i for i in range(1, 21) if i % 3]


POISON = ["a\u0000b@x.test", "\ud800", "x\udfffy", "ok\u00e9\u0000", "\U0001f600\ud83d"]


async def test_text_no_database_can_hold_is_bound_as_the_replacement_character(db):
    async with db.transaction() as tx:
        for i, text in enumerate(POISON, start=1):
            await tx.execute("INSERT INTO tl_items (id, name) VALUES (%s, %s)", (i, text))
        source, params = rows_source(tx, "tl_items", ("id", "name"), [(10, "m\u0000n"), (11, "\udc00")])
        await tx.execute(f"INSERT INTO tl_items (id, name) {source}", params)
        assert await tx.fetchval("SELECT COUNT(*) FROM tl_items WHERE name = %s", ("a\u0000b@x.test",)) == 1
    rows = {r["id"]: r["name"] for r in await db.fetchall("SELECT id, name FROM tl_items")}
    assert rows == {1: f"a{REPLACEMENT}b@x.test", 2: REPLACEMENT, 3: f"x{REPLACEMENT}y",
                    4: f"ok\u00e9{REPLACEMENT}", 5: f"\U0001f600{REPLACEMENT}", 10: f"m{REPLACEMENT}n",
                    11: REPLACEMENT}
    assert safe_text("plain") == "plain"


async def test_after_commit_hooks_run_after_commit_only(db):
    seen: list[str] = []

    async def committed(name):
        return await db.fetchval("SELECT COUNT(*) FROM tl_items WHERE name = %s", (name,))

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO tl_items (id, name) VALUES (%s, %s)", (1, "kept"))
        tx.after_commit(lambda: seen.append("kept"))
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                tx.after_commit(lambda: seen.append("undone"))
                raise RuntimeError("inside")
        assert seen == []  # not before COMMIT
    assert seen == ["kept"]
    assert await committed("kept") == 1
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            tx.after_commit(lambda: seen.append("rolled back"))
            raise RuntimeError("whole")
    assert seen == ["kept"]


@postgres_only
async def test_a_prepare_that_fails_on_a_lock_finds_the_deferred_savepoint_on_the_server(database_url):
    """A PREPARE (its first use, threshold 1) waits on a table a migration holds, and fails with a
    lock timeout: the SAVEPOINT deferred before it was sent first, so the unit rolls back and
    the transaction commits what it did outside it."""
    db = await open_db(database_url, threshold=1)
    dsn = db.dsn
    try:
        async with aiopg.connect(dsn) as locker, locker.cursor() as cur:
            await cur.execute("CREATE TABLE tl_locked (id INTEGER)")
            await cur.execute("BEGIN; LOCK TABLE tl_locked IN ACCESS EXCLUSIVE MODE")  # a migration
            async with db.transaction() as tx:
                await tx.execute("SET LOCAL lock_timeout = '200ms'")
                await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (1,))
                with pytest.raises(psycopg2.errors.LockNotAvailable):
                    async with tx.savepoint():
                        await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (2,))
                        await tx.fetchall("SELECT * FROM tl_locked WHERE id = %s", (1,))
                await tx.execute("INSERT INTO tl_items (id) VALUES (%s)", (3,))
            await cur.execute("ROLLBACK")
        assert await ids(db) == [1, 3]
    finally:
        await db.close()


@postgres_only
async def test_the_per_connection_statements_are_an_lru_that_deallocates_what_it_evicts(database_url):
    db = await open_db(database_url, threshold=1, per_connection=4)
    try:
        async with db.transaction() as tx:
            for n in range(10):
                assert await tx.fetchval(f"SELECT {n} AS n FROM tl_items WHERE id = %s OR TRUE", (n,)) is None
            names = await tx.fetchall("SELECT statement FROM pg_prepared_statements")
            # at most 4 live, plus the one prepared last (the stale ones go at the next PREPARE)
            assert len(names) <= 5, names
            assert any("SELECT 9 AS n" in r["statement"] for r in names)
            assert not any("SELECT 0 AS n" in r["statement"] for r in names)
    finally:
        await db.close()

