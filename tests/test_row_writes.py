"""Deferred row writes (vibe/db/rowwrites.py, issue 17): a run of them leaves exactly what the
same writes one after another leave, on both databases; on PostgreSQL the run goes as one
statement per table. Real SQL; the statement count comes from a statement-level trigger."""

import asyncio
import contextlib

import pytest
from conftest import ON_POSTGRES, postgres_only

from vibe.config import Settings
from vibe.db import postgres_transaction
from vibe.db.database import REPLACEMENT, create_database
from vibe.db.rowwrites import KeyedTable, defer_update, defer_upsert

ITEMS = KeyedTable("rw_items", "id", doubles=frozenset({"at"}))
OTHERS = KeyedTable("rw_others", "id")


@pytest.fixture
async def db(database_url):
    db = create_database(Settings.from_env({"DATABASE_URL": database_url, "MAX_DB_CONNECTIONS": "1",
                                            "DB_PREPARE_THRESHOLD": "1"}))
    await db.open()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE rw_items (id TEXT PRIMARY KEY, n BIGINT, label TEXT, "
                         "flag BOOLEAN NOT NULL DEFAULT FALSE, at DOUBLE PRECISION)")
        await tx.execute("CREATE TABLE rw_others (id TEXT PRIMARY KEY, item_id TEXT REFERENCES rw_items (id), n BIGINT)")
        if ON_POSTGRES:  # every UPDATE and INSERT statement counted, however many rows it writes
            await tx.execute("CREATE TABLE rw_statements (op TEXT)")
            await tx.execute("CREATE FUNCTION rw_count() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$BEGIN INSERT INTO rw_statements VALUES (TG_TABLE_NAME || ' ' || TG_OP); "
                             "RETURN NULL; END$$")
            for table in ("rw_items", "rw_others"):
                await tx.execute(f"CREATE TRIGGER rw_count AFTER INSERT OR UPDATE ON {table} "
                                 "FOR EACH STATEMENT EXECUTE FUNCTION rw_count()")
    yield db
    await db.close()


async def items(db) -> dict[str, dict]:
    return {r["id"]: r for r in await db.fetchall("SELECT id, n, label, flag, at FROM rw_items ORDER BY id")}


async def statements(db) -> list[str]:
    return [r["op"] for r in await db.fetchall("SELECT op FROM rw_statements")]


async def seed(db, *keys):
    async with db.transaction() as tx:
        for key in keys:
            await tx.execute("INSERT INTO rw_items (id, n, label) VALUES (%s, 0, 'seed')", (key,))
    if ON_POSTGRES:
        await db.execute("DELETE FROM rw_statements")


async def test_a_run_of_writes_to_many_rows_leaves_what_one_by_one_would(db):
    await seed(db, "a", "b", "c")
    async with db.transaction() as tx:
        for key in ("c", "a", "b"):  # as a batch's events: a profile updated, a subscription saved
            defer_update(tx, ITEMS, key, {"n": ord(key), "at": 1.25})
            defer_upsert(tx, OTHERS, f"o-{key}", {"item_id": key, "n": ord(key)})
        defer_upsert(tx, OTHERS, "o-a", {"item_id": "a", "n": 1})  # an existing row: updated
        defer_update(tx, ITEMS, "missing", {"n": 9})  # no row: changes nothing, like an UPDATE would
    rows = await items(db)
    assert {k: (r["n"], r["label"], r["at"]) for k, r in rows.items()} == {
        "a": (97, "seed", 1.25), "b": (98, "seed", 1.25), "c": (99, "seed", 1.25)}
    assert await db.fetchall("SELECT id, item_id, n FROM rw_others ORDER BY id") == [
        {"id": "o-a", "item_id": "a", "n": 1}, {"id": "o-b", "item_id": "b", "n": 98},
        {"id": "o-c", "item_id": "c", "n": 99}]
    if ON_POSTGRES:  # one UPDATE per field set, one upsert (it fires INSERT and UPDATE): 4 statements, not 11
        assert sorted(await statements(db)) == ["rw_items UPDATE", "rw_items UPDATE", "rw_others INSERT",
                                                "rw_others UPDATE"]


async def test_writes_to_one_row_combine_in_order_the_later_value_winning(db):
    await seed(db, "a")
    async with db.transaction() as tx:
        defer_update(tx, ITEMS, "a", {"n": 1, "label": "first"})
        defer_update(tx, ITEMS, "a", {"label": "second", "flag": True})
        defer_update(tx, ITEMS, "b", {"n": 5})
        defer_upsert(tx, OTHERS, "o", {"item_id": "a", "n": 1})
        defer_upsert(tx, OTHERS, "o", {"item_id": "a", "n": 2})  # the same row twice in one upsert would fail
    assert {k: (r["n"], r["label"], r["flag"]) for k, r in (await items(db)).items()} == {"a": (1, "second", True)}
    assert await db.fetchall("SELECT id, item_id, n FROM rw_others") == [{"id": "o", "item_id": "a", "n": 2}]


async def test_an_update_and_an_upsert_of_one_table_keep_their_order(db):
    async with db.transaction() as tx:
        defer_upsert(tx, ITEMS, "a", {"n": 1, "label": "inserted"})
        defer_update(tx, ITEMS, "a", {"label": "updated"})  # must find the row the upsert made
        defer_upsert(tx, ITEMS, "b", {"n": 2, "label": "b"})
    assert {k: r["label"] for k, r in (await items(db)).items()} == {"a": "updated", "b": "b"}
    if ON_POSTGRES:  # the UPDATE ended the upserts' run, so it ran between them
        # (an upsert fires its statement's UPDATE trigger, then its INSERT trigger)
        assert await statements(db) == ["rw_items UPDATE", "rw_items INSERT", "rw_items UPDATE",
                                        "rw_items UPDATE", "rw_items INSERT"]


async def test_later_statements_in_the_transaction_read_the_writes(db):
    await seed(db, "a", "b")
    async with db.transaction() as tx:
        defer_update(tx, ITEMS, "a", {"n": 10})
        defer_update(tx, ITEMS, "b", {"n": 20})
        assert await tx.fetchval("SELECT SUM(n) AS s FROM rw_items") == 30
        defer_update(tx, ITEMS, "a", {"n": 11})
        assert await tx.fetchval("SELECT n FROM rw_items WHERE id = %s", ("a",)) == 11


async def test_a_savepoint_that_fails_takes_its_writes_and_no_other(db):
    await seed(db, "a", "b", "c")
    async with db.transaction() as tx:
        for key in ("a", "b", "c"):  # one unit per row, as the dispatcher runs one event per savepoint
            with contextlib.suppress(RuntimeError):
                async with tx.savepoint():
                    defer_update(tx, ITEMS, key, {"n": 1})
                    if key == "b":
                        raise RuntimeError("this unit fails")
        await tx.execute("SELECT 1")  # the survivors go in one round trip, merged
        with contextlib.suppress(RuntimeError):
            async with tx.savepoint():
                defer_update(tx, ITEMS, "c", {"n": 2})
                await tx.execute("SELECT 1")  # sent: the rollback must undo it on the server
                raise RuntimeError("this one fails after its write went out")
    assert {k: r["n"] for k, r in (await items(db)).items()} == {"a": 1, "b": 0, "c": 1}


async def test_values_json_would_change_go_alone_and_mean_what_they_always_meant(db):
    """A float for a BIGINT is rounded when bound as a literal but refused in JSON, so that write
    is not merged; text no database holds becomes U+FFFD in a merged write as in a single one."""
    await seed(db, "a", "b", "c", "d")
    async with db.transaction() as tx:
        defer_update(tx, ITEMS, "a", {"n": 1, "label": "nul\x00here"})
        defer_update(tx, ITEMS, "b", {"n": 1.6, "label": "float"})
        defer_update(tx, ITEMS, "c", {"n": 1, "label": "lone\udc00"})
        defer_update(tx, ITEMS, "d", {"n": 1, "label": "pair \U0001f600, \\u0000 as text"})
        defer_update(tx, ITEMS, "c", {"at": float("inf")} if ON_POSTGRES else {"at": 2.0})
    rows = await items(db)
    assert [rows[k]["label"] for k in "abcd"] == [f"nul{REPLACEMENT}here", "float", f"lone{REPLACEMENT}",
                                                  "pair \U0001f600, \\u0000 as text"]  # kept as they are
    assert rows["b"]["n"] == 2 if ON_POSTGRES else rows["b"]["n"] in (1.6, 2)  # SQLite keeps what it is given
    assert rows["c"]["at"] == (float("inf") if ON_POSTGRES else 2.0)


@postgres_only
async def test_a_merged_write_that_fails_fails_the_transaction_and_leaves_nothing(db):
    await seed(db, "a")
    with pytest.raises(Exception, match="foreign key|violates"):
        async with db.transaction() as tx:
            defer_upsert(tx, OTHERS, "o1", {"item_id": "a", "n": 1})
            defer_upsert(tx, OTHERS, "o2", {"item_id": "nobody", "n": 2})
    assert await db.fetchall("SELECT id FROM rw_others") == []


@postgres_only
async def test_a_big_round_trip_is_built_in_slices_the_loop_runs_between(db, monkeypatch):
    # A dispatcher batch's deferred writes take milliseconds of Python to build; requests waiting
    # on the loop meanwhile are what the webhooks' p99 is made of.
    monkeypatch.setattr(postgres_transaction, "BUILD_SLICE_SECONDS", 0.0)  # a slice per statement
    await seed(db, "a")
    queued_while_building = []
    async with db.transaction() as tx:
        await tx.execute("SELECT 1")  # the connection is this transaction's: nothing else to wait for
        for n in range(1, 6):  # no parameters: none of them is prepared (a round trip of its own)
            tx.defer(f"UPDATE rw_items SET n = n + {n} WHERE id = 'a'")

        async def watch() -> None:
            while True:
                queued_while_building.append(len(tx._deferred))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        await tx.execute("UPDATE rw_items SET label = 'built' WHERE id = 'a'")
        watcher.cancel()
    # The watcher ran while all of the deferred statements were still queued (none handed over),
    # and each landed once.
    assert queued_while_building.count(5) >= 3
    assert (await items(db))["a"]["n"] == 15 and (await items(db))["a"]["label"] == "built"
