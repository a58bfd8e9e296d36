"""Caches are evicted after COMMIT (issue 15): an upgrade whose transaction runs longer than the
0.5 s fence, while a reader caches the old profile in between, is seen as soon as it commits.
Both databases, through HTTP, with the default fence."""

import asyncio
import time
import uuid

import tokens
from conftest import load_event, make_event, wait_until

from vibe.plugins.hookspecs import hookimpl
from vibe.users.caches import SizedCache, estimate_size
from vibe.users.keys import USER_SESSION_CACHE

PATH = "/functions/v1/user-management"
PRO_ITEM = {"resource_type": "workshop", "resource_id": "6"}


class SlowCommit:
    """Holds the event's transaction open 0.8 s after its handler (and the eviction) ran."""

    def __init__(self):
        self.started = asyncio.Event()

    @hookimpl
    async def stripe_event_processed(self, ctx, event):
        if event["type"] == "customer.subscription.updated":
            self.started.set()
            await asyncio.sleep(0.8)


async def tier(service, token) -> str:
    resp = await service.client.post(PATH, json={"action": "check_access", "data": PRO_ITEM},
                                     headers=tokens.auth(token))
    return (await resp.json())["user_tier"]


async def test_an_upgrade_committed_after_the_fence_is_seen_at_once(start_service):
    slow = SlowCommit()
    service = await start_service(extra_plugins=(slow,))
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    resp = await service.client.post(PATH, json={"action": "create_profile", "data": {}}, headers=tokens.auth(token))
    assert resp.status == 200

    async def cached() -> bool:
        await tier(service, token)
        return service.app[USER_SESSION_CACHE].profile(user_id) is not None

    await wait_until(cached, 5)
    sub = load_event("customer.subscription.updated")["data"]["object"]
    sub.update(id=f"sub_{uuid.uuid4().hex[:14]}", customer=f"cus_{uuid.uuid4().hex[:14]}",
               metadata={"user_id": user_id})
    event = make_event("customer.subscription.updated", sub)
    assert (await service.post_event(event)).status == 200
    await asyncio.wait_for(slow.started.wait(), 10)
    await asyncio.sleep(0.6)  # the fence (0.5 s) has lapsed; the upgrade is not committed yet
    assert await tier(service, token) == "free"  # the committed truth, now cached again
    assert service.app[USER_SESSION_CACHE].profile(user_id) is not None
    row = await service.wait_status(event["id"], "processed")
    assert row["status"] == "processed"
    committed = time.monotonic()
    assert await tier(service, token) == "pro"  # not "free" for the cache's 15 minutes
    assert time.monotonic() - committed < 1


def test_cache_sizing_walks_a_value_nested_thousands_deep():
    deep: list = []
    for _ in range(5000):
        deep = [deep, {"k": "v" * 100}]
    assert estimate_size(deep) > 5000 * 100
    cache = SizedCache("t", 50 * 1024 * 1024, 60)
    assert cache.set(("journey", "u"), deep) is True
    shared = "x" * 1000
    assert estimate_size([shared, shared]) < estimate_size([shared, "y" * 1000])  # counted once
