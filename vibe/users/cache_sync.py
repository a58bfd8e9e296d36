"""Keeping caches true: evict on the domain hooks, and across instances with LISTEN/NOTIFY.

`user_created`, `user_changed` and `subscription_changed` (announced by the Stripe pipeline and
by the user-management actions, inside their transaction) evict the user from this process's
`UserSessionCache` and `DatabaseQueryCache` at once, and again right after the transaction
commits (`Transaction.after_commit`, on both databases). On PostgreSQL the hook also sends
`pg_notify` in the same transaction (one per transaction, naming all the users it changed):
PostgreSQL delivers it only if and when the transaction commits, to every instance listening.
It names its sender, which passes over its own: it evicted after its commit already (a third
eviction of each user cost about 4% of a Stripe batch's Python, by cProfile). Each instance
listens on a dedicated connection (`cache_listener_ctx`); after the connection is lost and
re-opened, it clears its caches, since notifications may have been missed. The channel is named
after the schema, so instances of one deployment share it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import uuid
from typing import AsyncIterator

import aiopg
import psycopg2
from aiohttp import web

from vibe.keys import SETTINGS, SHUTDOWN
from vibe.plugins.hookspecs import hookimpl
from vibe.users.keys import CONTENT_CACHE, QUERY_CACHE, USER_SESSION_CACHE
from vibe.users.progress import overview_key

log = logging.getLogger(__name__)


def evict_user(app: web.Application, user_id: str) -> None:
    app[USER_SESSION_CACHE].invalidate_user(user_id)
    app[QUERY_CACHE].invalidate_key(overview_key(user_id))  # exact: no scan of the whole cache


def apply(app: web.Application, payload: str, own: str) -> None:
    """Apply one notification: `{"users": [id, ...]}`, `{"user": id}` or `{"content": true}`;
    users named by this instance's own (`"from": own`) were evicted after its commit already."""
    try:
        message = json.loads(payload)
    except ValueError:
        log.warning("cache notification is not JSON: %.100r", payload)
        return
    if not isinstance(message, dict):
        return
    if message.get("from") == own:
        return
    users = message.get("users")
    if isinstance(message.get("user"), str):
        users = [message["user"]]
    if isinstance(users, list):
        for user_id in users:
            if isinstance(user_id, str):
                evict_user(app, user_id)
    elif message.get("content"):
        app[CONTENT_CACHE].clear()


NOTIFY_BYTES = 7000  # PostgreSQL's limit for a payload is 8000 bytes


def notifications(user_ids: list[str], sender: str | None = None) -> list[str]:
    """`{"users": [...], "from": sender}` payloads for `user_ids` (each once, in order), each under
    NOTIFY_BYTES."""
    signed = {"from": sender} if sender else {}
    payloads, batch, size = [], [], 0
    for user_id in dict.fromkeys(user_ids):
        cost = len(json.dumps(user_id)) + 2
        if batch and size + cost > NOTIFY_BYTES:
            payloads.append(json.dumps({"users": batch, **signed}))
            batch, size = [], 0
        batch.append(user_id)
        size += cost
    if batch:
        payloads.append(json.dumps({"users": batch, **signed}))
    return payloads


class CacheInvalidation:
    """The hook implementations, bound to one app (registered by `vibe.users.setup`)."""

    NAME = "vibe.cache_invalidation"

    def __init__(self, app: web.Application):
        self.app = app
        self.channel: str | None = None  # PostgreSQL: vibe_cache_<schema>, found on first use
        self.instance = uuid.uuid4().hex  # names this process's notifications

    async def _announce(self, ctx, user_id: str | None) -> None:
        if not user_id:
            return
        # Gathered (a batch of Stripe events changes many users, each several times), for what
        # happens once per user and transaction: see `_gathered`.
        gathered = ctx.tx.collect(self._gathered)
        if user_id not in gathered:  # evicted already in this transaction, and again after it
            evict_user(self.app, user_id)  # now, fenced: no reader caches the row while we write it
        gathered.append(user_id)

    async def _gathered(self, tx, user_ids: list[str]) -> None:
        """Just before COMMIT: evict the users again after it (a reader that loaded the old row
        once the fence had lapsed, in a transaction longer than CACHE_FENCE_SECONDS, put it back;
        it goes then, for good); on PostgreSQL, one notification for all of them."""
        users = list(dict.fromkeys(user_ids))
        tx.after_commit(functools.partial(self._evict_all, users))
        if tx.dialect == "postgresql":
            if self.channel is None:  # a hook before the listener started (the dispatcher starts first)
                self.channel = channel_for(self.app[SETTINGS].db.schema)
            for payload in notifications(users, self.instance):
                tx.defer("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def _evict_all(self, user_ids: list[str]) -> None:
        for user_id in user_ids:
            evict_user(self.app, user_id)

    @hookimpl
    async def user_created(self, ctx, user):
        await self._announce(ctx, user.id if user is not None else None)

    @hookimpl
    async def user_changed(self, ctx, user_id):
        await self._announce(ctx, user_id)

    @hookimpl
    async def subscription_changed(self, ctx, user_id):
        await self._announce(ctx, user_id)


def channel_for(schema: str) -> str:
    return ("vibe_cache_" + re.sub(r"[^a-z0-9_]", "_", schema.lower()))[:63]


async def _listen(app: web.Application, invalidation: CacheInvalidation, ready: asyncio.Event) -> None:
    dsn = app[SETTINGS].db.url
    delay, connected_before = 0.5, False
    while True:
        try:
            async with aiopg.connect(dsn, timeout=10) as conn:
                async with conn.cursor() as cur:  # one channel per DATABASE_SCHEMA, as deployments are
                    channel = channel_for(app[SETTINGS].db.schema)
                    await cur.execute(f'LISTEN "{channel}"')
                invalidation.channel = channel
                if connected_before:  # whatever was sent while we were away is lost: start afresh
                    for key in (USER_SESSION_CACHE, QUERY_CACHE, CONTENT_CACHE):
                        app[key].clear()
                connected_before, delay = True, 0.5
                ready.set()
                while True:
                    message = await conn.notifies.get()
                    apply(app, message.payload, invalidation.instance)
        except (psycopg2.Error, OSError, asyncio.TimeoutError) as exc:
            log.warning("cache listener lost its connection (%s); reconnecting in %.1fs", exc, delay)
            ready.set()  # do not hold start-up hostage; the hooks still evict locally
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def listener_ctx(invalidation: CacheInvalidation):
    async def cache_listener_ctx(app: web.Application) -> AsyncIterator[None]:
        if app[SETTINGS].db.dialect != "postgresql":
            yield
            return
        ready = asyncio.Event()
        task = asyncio.create_task(_listen(app, invalidation, ready), name="cache-listener")
        waiter = asyncio.ensure_future(ready.wait())
        done, _ = await asyncio.wait([task, waiter], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()  # the listener died at start-up: raise its error here
        try:
            yield
        finally:
            task.cancel()
            await app[SHUTDOWN].stop("cache listener", [task])

    return cache_listener_ctx
