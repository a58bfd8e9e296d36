"""Group commit: many concurrent requests' writes in one transaction, each answered once durable.

A request calls `await committer.submit(item)`. Items gather while a flush is running; the next
flush takes up to `max_batch` of them into one transaction (`flush(tx, items) -> results`), and
every request waiting on that batch is answered with its own result after COMMIT, or with the
exception if the transaction failed. So "2xx means committed" holds, and under load one fsync
serves a whole batch instead of one request. With no load the batch is one item and no wait is
added (unless `max_wait` asks to linger for company). With `weight`, `max_batch` counts what
each item weighs (e.g. the events a request carries) instead of items; an item is never split.
With `one_statement`, `flush` sends a single idempotent write, committed by itself
(`Database.one_statement`: on PostgreSQL no BEGIN and no COMMIT, one round trip a batch).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from vibe.db.database import Database, Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
FlushFn = Callable[[Transaction, Sequence[T]], Awaitable[Sequence[R]]]


class GroupCommitter(Generic[T, R]):
    def __init__(self, db: Database, flush: FlushFn, *, max_batch: int = 100, max_wait: float = 0.0,
                 concurrency: int = 1, name: str = "group-commit", weight: Callable[[T], int] | None = None,
                 one_statement: bool = False):
        self._db = db
        self._flush = flush
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.name = name
        self._weight = weight
        self.one_statement = one_statement  # `flush` sends one idempotent write: `Database.one_statement`
        self.pending = 0  # total weight waiting (items, without `weight`)
        self.flushing = 0  # items in transactions not yet committed
        self._queue: list[tuple[T, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0
        self.items = 0

    @property
    def depth(self) -> int:
        """Items waiting for a flush."""
        return len(self._queue)

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self.pending += self._weight(item) if self._weight else 1
        if len(self._tasks) < self.concurrency:
            task = asyncio.create_task(self._run(), name=self.name)
            self._tasks.add(task)
        return await future

    async def _run(self) -> None:
        try:
            await self._drain()
        finally:
            # Leave the set in the same step as the last look at the queue: a done-callback would
            # run later, and a submit in between (say, the waiter just answered submitting again)
            # would count this finished task as running and wait forever.
            self._tasks.discard(asyncio.current_task())

    async def _drain(self) -> None:
        while self._queue:
            if self.max_wait and self.pending < self.max_batch:
                await asyncio.sleep(self.max_wait)
            batch, self._queue = self._take()
            if not batch:
                continue
            self.flushing += len(batch)
            try:
                async with (self._db.one_statement() if self.one_statement else self._db.transaction()) as tx:
                    results = await self._flush(tx, [item for item, _ in batch])
            except BaseException as exc:  # every waiter learns the batch failed
                self.flushing -= len(batch)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.flushing -= len(batch)
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _take(self) -> tuple[list, list]:
        """The next batch: up to `max_batch` in weight, at least one item."""
        if self._weight is None:
            take = min(self.max_batch, len(self._queue))
            self.pending -= take
            return self._queue[:take], self._queue[take:]
        total = take = 0
        for item, _ in self._queue:
            w = self._weight(item)
            if take and total + w > self.max_batch:
                break
            total, take = total + w, take + 1
        self.pending -= total
        return self._queue[:take], self._queue[take:]

    def stop(self) -> list[asyncio.Task]:
        """Take no more items; return the flushes still running, for the caller to wait for.
        (Once closed, no flush starts, so the list only shrinks.)"""
        self._closed = True
        return list(self._tasks)

    async def close(self) -> None:
        """Stop taking items and finish the batches already taken (graceful shutdown)."""
        await asyncio.gather(*self.stop(), return_exceptions=True)
