"""The group committer answers every submit, including one made the moment the previous answer
arrives (the finished flush task must not be counted as still running)."""

import asyncio

from vibe.config import Settings
from vibe.db.database import create_database
from vibe.db.groupcommit import GroupCommitter


async def test_a_submit_right_after_an_answer_is_flushed(database_url):
    db = create_database(Settings.from_env({"DATABASE_URL": database_url}))
    await db.open()
    try:
        async def flush(tx, items):
            return [await tx.fetchval("SELECT %s AS v", (item,)) for item in items]

        committer = GroupCommitter(db, flush, name="test")

        async def back_to_back():
            answers = [await committer.submit(1)]
            answers.append(await committer.submit(2))  # the same task, at once: no new loop iteration
            return answers

        assert [int(v) for v in await asyncio.wait_for(back_to_back(), 5)] == [1, 2]
        await committer.close()
    finally:
        await db.close()
