"""Prepared statements on PostgreSQL (vibe/db/prepared.py): a statement sent often is prepared
on the server and then does exactly what its text did; what cannot be prepared, or a value whose
literal PostgreSQL would type differently, goes as text, and the transaction never notices.

(The whole suite also runs with DB_PREPARE_THRESHOLD=1 on PostgreSQL, so every statement of the
service goes through this path there.)"""

import psycopg2
import pytest
from conftest import postgres_only

from vibe.config import Settings
from vibe.db.database import create_database
from vibe.db.prepared import fits, numbered


async def open_db(database_url, threshold):
    db = create_database(Settings.from_env({"DATABASE_URL": database_url, "MAX_DB_CONNECTIONS": "1",
                                            "DB_PREPARE_THRESHOLD": str(threshold)}))
    await db.open()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION)")
    return db


@pytest.fixture
async def db(database_url):
    db = await open_db(database_url, 1)
    yield db
    await db.close()


async def prepared_statements(tx) -> list[str]:
    rows = await tx.fetchall("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
    return [r["statement"] for r in rows]


@postgres_only
async def test_a_statement_sent_threshold_times_is_prepared_and_does_the_same(database_url):
    db = await open_db(database_url, 3)
    try:
        insert = "INSERT INTO items (id, name, score) VALUES (%s, %s, %s) RETURNING id, name, score"
        for i in range(1, 6):
            async with db.transaction() as tx:
                row = await tx.fetchone(insert, (i, f"item {i}", i / 2))
                assert row == {"id": i, "name": f"item {i}", "score": i / 2}
                prepared = [s for s in await prepared_statements(tx) if "INSERT INTO items" in s]
                assert len(prepared) == (1 if i >= 3 else 0)  # the third use prepares it
        async with db.transaction() as tx:
            assert await tx.execute("UPDATE items SET score = score + %s WHERE id > %s", (1, 2)) == 3
            assert await tx.execute("UPDATE items SET score = score + %s WHERE id > %s", (1, 2)) == 3
            assert await tx.execute("UPDATE items SET score = score + %s WHERE id > %s", (1, 2)) == 3  # prepared
            assert await tx.fetchval("SELECT SUM(score) FROM items WHERE id > %s", (2,)) == 1.5 + 2 + 2.5 + 9
    finally:
        await db.close()


@postgres_only
async def test_threshold_zero_never_prepares(database_url):
    db = await open_db(database_url, 0)
    try:
        async with db.transaction() as tx:
            for i in range(5):
                await tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (i, "x"))
            assert await prepared_statements(tx) == []
    finally:
        await db.close()


@postgres_only
async def test_a_literal_typed_differently_from_the_inferred_parameter_goes_as_text(db):
    async with db.transaction() as tx:
        # PostgreSQL infers text for a bare parameter; the literal 5 is an integer
        for _ in range(2):
            assert await tx.fetchval("SELECT %s AS v", (5,)) == 5
            assert await tx.fetchval("SELECT %s AS v", ("five",)) == "five"
        # $1 + 1 is integer arithmetic; a bigint or a fraction would change the answer
        for _ in range(2):
            assert await tx.fetchval("SELECT %s + 1 AS v", (2,)) == 3
            assert await tx.fetchval("SELECT %s + 1 AS v", (2**40,)) == 2**40 + 1
            assert float(await tx.fetchval("SELECT %s + 1 AS v", (2.5,))) == 3.5
        assert await tx.fetchval("SELECT %s::boolean AND %s AS v", (True, False)) is False
        assert await tx.fetchval("SELECT %s || '%%' AS v", ("50",)) == "50%"  # %% is a literal percent sign


@postgres_only
async def test_what_cannot_be_prepared_runs_as_text_and_the_transaction_goes_on(db):
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        for _ in range(3):
            # a tuple is an IN list: no PREPARE can take it
            assert await tx.fetchval("SELECT COUNT(*) FROM items WHERE id IN %s", ((1, 2),)) == 2
            # a parameter whose type nothing determines: PREPARE fails inside its savepoint
            assert await tx.fetchval("SELECT COUNT(*) FROM items WHERE %s IS NULL", (None,)) == 3
        tx.defer("INSERT INTO items (id, name) VALUES (%s, %s)", (4, "d"))  # sent with the next statement
        assert await tx.fetchval("SELECT COUNT(*) FROM items WHERE name = ANY(%s)", (["a", "d"],)) == 2
    assert await db.fetchval("SELECT COUNT(*) FROM items") == 4


@postgres_only
async def test_several_statements_in_one_string_are_not_prepared_and_run_once(db):
    for i in range(3):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (id, name) VALUES (%s, 'x'); "
                             "UPDATE items SET score = COALESCE(score, 0) + 1", (i,))
    assert await db.fetchall("SELECT id, score FROM items ORDER BY id") == [
        {"id": 0, "score": 3.0}, {"id": 1, "score": 2.0}, {"id": 2, "score": 1.0}]
    async with db.transaction() as tx:
        assert not [s for s in await prepared_statements(tx) if "UPDATE items" in s]


@postgres_only
async def test_a_trailing_comment_and_a_rolled_back_transaction_leave_it_working(db):
    select = "SELECT name FROM items WHERE id = %s -- the one item"
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "gone"))
            assert await tx.fetchval(select, (1,)) == "gone"
            raise RuntimeError("roll it back")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "kept"))
        assert await tx.fetchval(select, (1,)) == "kept"
        assert any("the one item" in s for s in await prepared_statements(tx))


@postgres_only
async def test_a_failing_execute_fails_the_transaction_like_the_text_would(db):
    insert = "INSERT INTO items (id, name) VALUES (%s, %s)"
    async with db.transaction() as tx:
        await tx.execute(insert, (1, "a"))
    with pytest.raises(psycopg2.errors.UniqueViolation):
        async with db.transaction() as tx:
            await tx.execute(insert, (2, "b"))
            await tx.execute(insert, (1, "again"))
    assert await db.fetchall("SELECT id, name FROM items") == [{"id": 1, "name": "a"}]


def test_placeholders_are_numbered_like_psycopg2_reads_them():
    assert numbered("SELECT %s, '%%', %s") == ("SELECT $1, '%', $2", 2)
    assert numbered("SELECT 1") == ("SELECT 1", 0)
    assert numbered("SELECT %(name)s") is None
    assert numbered("SELECT 100%") is None


@pytest.mark.parametrize("value, pgtype, expected", [
    (None, "integer", True), ("text", "integer", True), (5, "integer", True), (2**31, "integer", False),
    (2**31, "bigint", True), (5, "text", False), (1.5, "double precision", True), (1.5, "integer", False),
    (True, "boolean", True), (True, "integer", False), ([1], "integer[]", True), ([1], "integer", False),
    (b"x", "bytea", True), ({"a": 1}, "json", False),
])
def test_which_values_fit_an_inferred_type(value, pgtype, expected):
    assert fits(value, pgtype) is expected


@postgres_only
async def test_a_migration_that_changes_a_prepared_select_costs_one_failure(db):
    select = "SELECT * FROM items WHERE id = %s"
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        assert await tx.fetchone(select, (1,)) == {"id": 1, "name": "a", "score": None}
    async with db.transaction() as tx:
        await tx.execute("ALTER TABLE items ADD COLUMN note TEXT")
    with pytest.raises(psycopg2.errors.FeatureNotSupported):  # the plan PostgreSQL cached is stale
        async with db.transaction() as tx:
            await tx.fetchone(select, (1,))
    async with db.transaction() as tx:  # the same connection (the pool has one) prepares it again
        assert await tx.fetchone(select, (1,)) == {"id": 1, "name": "a", "score": None, "note": None}


@postgres_only
async def test_an_update_joining_a_json_batch_is_planned_each_time_an_upsert_is_prepared(db):
    """A generic plan of `UPDATE ... FROM json_populate_recordset(...)` made while the table was
    small scans the whole table once the table has grown; so that one is never prepared. An
    insert from the same JSON source has no join to plan: it is prepared as usual."""
    update = ("UPDATE items AS i SET score = v.score FROM (SELECT id, score FROM "
              "json_populate_recordset(NULL::items, %s::json)) AS v WHERE i.id = v.id")
    upsert = ("INSERT INTO items (id, name, score) SELECT id, name, score FROM json_populate_recordset(NULL::items, %s::json) "
              "ON CONFLICT (id) DO UPDATE SET score = items.score + EXCLUDED.score")
    for round_no in range(1, 8):
        async with db.transaction() as tx:
            await tx.execute(upsert, (f'[{{"id": {round_no}, "name": "n", "score": 1}}]',))
            assert await tx.execute(update, (f'[{{"id": 1, "score": {round_no}}}, {{"id": 99, "score": 0}}]',)) == 1
    async with db.transaction() as tx:
        statements = await prepared_statements(tx)
    assert [s for s in statements if "INSERT INTO items" in s]
    assert not [s for s in statements if "UPDATE items AS i" in s]
    assert await db.fetchall("SELECT id, score FROM items WHERE id < 3 ORDER BY id") == [
        {"id": 1, "score": 7.0}, {"id": 2, "score": 1.0}]


@postgres_only
async def test_outside_a_transaction_a_statement_is_neither_prepared_nor_counted(database_url):
    """A read outside a transaction (autocommit: no savepoint guards a PREPARE there) goes as
    text, and its uses do not count towards preparing it inside a transaction later."""
    db = await open_db(database_url, 3)
    try:
        select = "SELECT name FROM items WHERE id = %s"
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        for _ in range(5):
            assert await db.fetchval(select, (1,)) == "a"
        for uses in range(1, 4):
            async with db.transaction() as tx:
                assert await tx.fetchval(select, (1,)) == "a"
                prepared = [s for s in await prepared_statements(tx) if "SELECT name FROM items" in s]
                assert len(prepared) == (1 if uses >= 3 else 0)  # the third use in a transaction
    finally:
        await db.close()
