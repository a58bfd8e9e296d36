"""`tx.collect(flush)`: rows many events of a batch gather are written once, before COMMIT; what a
savepoint that rolls back gathered is dropped with it; a transaction that fails writes nothing."""

import pytest

from vibe.config import Settings
from vibe.db.database import create_database


@pytest.fixture
async def db(database_url):
    db = create_database(Settings.from_env({"DATABASE_URL": database_url}))
    await db.open()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE gathered (v TEXT PRIMARY KEY)")
    yield db
    await db.close()


flushes: list[list[str]] = []


async def write(tx, items):
    flushes.append(list(items))
    await tx.executemany("INSERT INTO gathered (v) VALUES (%s)", [(v,) for v in items])


async def values(db) -> list[str]:
    return [r["v"] for r in await db.fetchall("SELECT v FROM gathered ORDER BY v")]


async def test_gathered_items_are_written_once_before_commit(db):
    flushes.clear()
    async with db.transaction() as tx:
        tx.collect(write).extend(["a", "b"])
        tx.collect(write).append("c")  # the same list for the same flush
        assert await tx.fetchval("SELECT COUNT(*) FROM gathered") == 0  # not yet written
    assert flushes == [["a", "b", "c"]]
    assert await values(db) == ["a", "b", "c"]


async def test_a_rolled_back_savepoint_drops_what_it_gathered(db):
    flushes.clear()
    async with db.transaction() as tx:
        tx.collect(write).append("kept")
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                tx.collect(write).append("dropped")
                await tx.execute("SELECT 1")  # something reached the server inside the savepoint
                raise RuntimeError("handler failed")
        async with tx.savepoint():
            tx.collect(write).append("also kept")
    assert await values(db) == ["also kept", "kept"]


async def test_flush_collected_writes_now_and_a_failed_transaction_writes_nothing(db):
    async with db.transaction() as tx:
        tx.collect(write).append("early")
        await tx.flush_collected()
        assert await tx.fetchval("SELECT COUNT(*) FROM gathered") == 1
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            tx.collect(write).append("never")
            raise RuntimeError("the transaction fails")
    assert await values(db) == ["early"]
