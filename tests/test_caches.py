"""Caches: bounded by bytes, counted, fenced against races, and evicted by Stripe events,
by user-management writes, and (PostgreSQL) across instances through LISTEN/NOTIFY."""

import asyncio
import json
import time
import uuid

import aiopg
import psycopg2
import pytest
import tokens
from conftest import load_event, make_event, postgres_only, wait_until

from vibe.db.row_security import as_user
from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.users.cache_sync import CacheInvalidation, notifications
from vibe.users.caches import (
    DatabaseQueryCache,
    SizedCache,
    UserSessionCache,
    estimate_size,
)
from vibe.users.keys import QUERY_CACHE, USER_SESSION_CACHE
from vibe.web.auth import Principal

PATH = "/functions/v1/user-management"
PRO_ITEM = {"resource_type": "workshop", "resource_id": "6"}


async def call(service, action, data, token):
    resp = await service.client.post(PATH, json={"action": action, "data": data}, headers=tokens.auth(token))
    return resp.status, await resp.json()


def test_size_estimate_follows_content():
    small = {"id": "u1", "tier": "free"}
    big = {"id": "u1", "tier": "free", "bio": "x" * 10_000, "items": [{"n": i} for i in range(100)]}
    assert estimate_size(big) > estimate_size(small) + 10_000
    shared = "y" * 1000
    assert estimate_size([shared, shared]) < 2 * estimate_size(shared)  # counted once
    p = Principal(role="user", user_id="u" * 500, claims={"k": "v" * 2000})
    assert estimate_size(p) > 2500


def test_byte_bound_counters_and_expiry():
    cache = SizedCache("t", max_bytes=50_000, ttl=60, fence_seconds=0)
    for i in range(200):
        cache.set(("k", i), "v" * 1000)
    stats = cache.stats()
    assert stats["bytes"] <= 50_000 and 30 <= stats["entries"] < 50 and stats["evictions"] == 200 - stats["entries"]
    assert cache.get(("k", 199)) == "v" * 1000 and cache.get(("k", 0)) is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.set("huge", "x" * 60_000) is False and cache.stats()["rejected"] == 1
    assert cache.set("gone", 1, expires_at=time.time() - 1) is False
    cache.set("soon", 1, expires_at=time.time() + 0.05)
    assert cache.get("soon") == 1
    time.sleep(0.06)
    assert cache.get("soon") is None


def test_invalidation_by_prefix_predicate_and_fence():
    cache = DatabaseQueryCache("q", 1_000_000, 60, fence_seconds=30)
    cache.set(("user", "a", "overview"), 1)
    cache.set(("user", "a", "other"), 2)
    cache.set(("user", "ab", "overview"), 3)
    cache.set("analytics:daily:2026-11-26", 4)
    assert cache.invalidate(("user", "a")) == 2 and cache.get(("user", "ab", "overview")) == 3
    assert cache.invalidate("analytics:") == 1
    assert cache.invalidate(lambda key: key[1] == "ab") == 1
    # within the fence, a value read before (or around) the write cannot come back
    assert cache.set(("user", "a", "overview"), "stale") is False
    assert cache.set(("user", "b", "overview"), "fine") is True
    loaded_at = time.monotonic()
    sessions = UserSessionCache("s", 1_000_000, 60, fence_seconds=0)
    sessions.invalidate_user("u")
    sessions.put_profile("u", {"tier": "free"}, loaded_at)  # loaded before the invalidation: refused
    assert sessions.profile("u") is None
    sessions.put_profile("u", {"tier": "pro"}, time.monotonic())
    assert sessions.profile("u") == {"tier": "pro"}


@pytest.fixture
async def service(start_service):
    return await start_service(CACHE_FENCE_SECONDS="0")  # so the tests can see entries come back at once


async def test_stripe_subscription_event_evicts_the_cached_tier(service):
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    assert (await call(service, "create_profile", {}, token))[0] == 200
    status, body = await call(service, "check_access", PRO_ITEM, token)
    assert body["allowed"] is False and body["user_tier"] == "free"

    async def cached() -> bool:
        # The profile is cached again once the eviction's fence (CACHE_FENCE_SECONDS) has passed.
        await call(service, "check_access", PRO_ITEM, token)
        return service.app[USER_SESSION_CACHE].profile(user_id) is not None

    await wait_until(cached, 5)
    hits = service.app[USER_SESSION_CACHE].hits
    status, body = await call(service, "check_access", PRO_ITEM, token)
    assert service.app[USER_SESSION_CACHE].hits >= hits + 2  # token and profile from the cache

    sub = load_event("customer.subscription.updated")["data"]["object"]
    sub.update(id=f"sub_{uuid.uuid4().hex[:14]}", customer=f"cus_{uuid.uuid4().hex[:14]}",
               metadata={"user_id": user_id})
    await service.deliver(make_event("customer.subscription.updated", sub))
    status, body = await call(service, "check_access", PRO_ITEM, token)
    assert body["allowed"] is True and body["user_tier"] == "pro"


async def test_progress_sync_evicts_the_overview(service):
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    await call(service, "create_profile", {}, token)
    status, body = await call(service, "get_profile", {}, token)
    assert body["summary"]["completed"] == 0 and service.app[QUERY_CACHE].get(("user", user_id, "overview"))
    await call(service, "sync_progress", {"items": [{**PRO_ITEM, "resource_id": "1", "status": "completed"}]}, token)
    status, body = await call(service, "get_profile", {}, token)
    assert body["summary"]["completed"] == 1


@postgres_only
async def test_a_change_reaches_another_instance_within_a_second(start_service):
    one = await start_service(CACHE_FENCE_SECONDS="0")
    two = await start_service(CACHE_FENCE_SECONDS="0")  # same database and schema: a second instance
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    await call(one, "create_profile", {}, token)
    for instance in (one, two):
        status, body = await call(instance, "check_access", PRO_ITEM, token)
        assert body["allowed"] is False
    assert two.app[USER_SESSION_CACHE].profile(user_id)["tier"] == "free"
    status, _ = await call(one, "update_subscription", {"user_id": user_id, "tier": "pro", "reason": "t"},
                           tokens.service_token())
    assert status == 200
    started = time.monotonic()

    async def evicted():
        return two.app[USER_SESSION_CACHE].profile(user_id) is None

    await wait_until(evicted, timeout=5)
    assert time.monotonic() - started < 1.0
    status, body = await call(two, "check_access", PRO_ITEM, token)
    assert body["allowed"] is True


@postgres_only
async def test_a_change_s_notification_names_the_instance_that_sent_it(service):
    user_id = str(uuid.uuid4())
    await call(service, "create_profile", {}, tokens.user_token(user_id))
    invalidation = service.app[PLUGINS].get_plugin(CacheInvalidation.NAME)
    async with aiopg.connect(service.app[SETTINGS].db.url) as conn:  # another listener, as a second instance
        async with conn.cursor() as cur:
            await cur.execute(f'LISTEN "{invalidation.channel}"')
        status, _ = await call(service, "update_subscription", {"user_id": user_id, "tier": "pro", "reason": "t"},
                               tokens.service_token())
        assert status == 200
        message = json.loads((await asyncio.wait_for(conn.notifies.get(), 5)).payload)
    assert message == {"users": [user_id], "from": invalidation.instance}


@postgres_only
async def test_an_instance_passes_over_its_own_notification_and_applies_another_s(service):
    # Its own was sent by a transaction after whose commit it evicted already; applying it too
    # would evict a profile read after that commit, which is the committed one.
    users = [str(uuid.uuid4()), str(uuid.uuid4())]
    for user_id in users:
        token = tokens.user_token(user_id)
        await call(service, "create_profile", {}, token)
        await call(service, "check_access", PRO_ITEM, token)
    cache = service.app[USER_SESSION_CACHE]
    assert all(cache.profile(user_id) for user_id in users)
    invalidation = service.app[PLUGINS].get_plugin(CacheInvalidation.NAME)
    own, = notifications(users[:1], invalidation.instance)
    other, = notifications(users[1:], "another-instance")
    async with service.app[DB].transaction() as tx:  # delivered in this order, after the commit
        await tx.execute("SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
                         (invalidation.channel, own, invalidation.channel, other))

    async def applied() -> bool:
        return cache.profile(users[1]) is None

    await wait_until(applied, timeout=5)
    assert cache.profile(users[0]) is not None


@postgres_only
async def test_row_level_security_hides_other_users_rows(service):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    for user_id in (a, b):
        token = tokens.user_token(user_id)
        await call(service, "create_profile", {}, token)
        status, _ = await call(service, "sync_progress", {"items": [
            {"resource_type": "workshop", "resource_id": "1", "status": "completed"},
            {"resource_type": "commandment", "resource_id": "1", "status": "in_progress", "progress": 5}]}, token)
        assert status == 200
    db = service.app[DB]
    assert await db.fetchval("SELECT COUNT(*) FROM user_progress") == 4  # the service's own role sees all
    async with db.transaction() as tx:
        async with as_user(tx, a):
            # the queries forgot their WHERE user_id = ...
            progress = await tx.fetchall("SELECT user_id FROM user_progress")
            achievements = await tx.fetchall("SELECT user_id FROM user_achievements")
            profiles = await tx.fetchall("SELECT id FROM profiles")
            updated = await tx.execute("UPDATE user_progress SET progress = 99")
    assert {r["user_id"] for r in progress} == {a} and len(progress) == 2
    assert {r["user_id"] for r in achievements} == {a}
    assert [r["id"] for r in profiles] == [a]
    assert updated == 2
    assert await db.fetchval("SELECT COUNT(*) FROM user_progress WHERE user_id = %s AND progress = 99", (b,)) == 0
    with pytest.raises(psycopg2.Error, match="row-level security"):
        async with db.transaction() as tx:
            async with as_user(tx, a):
                await tx.execute("INSERT INTO user_progress (user_id, resource_type, resource_id, status, progress, "
                                 "updated_at) VALUES (%s, 'workshop', '2', 'completed', 100, 0)", (b,))


def test_notifications_name_each_user_once_and_stay_under_the_payload_limit():
    users = [f"user-{i:05d}-{'x' * 40}" for i in range(400)]
    payloads = notifications(users + users[:10])
    assert len(payloads) > 1 and all(len(p.encode()) <= 8000 for p in payloads)
    named = [u for p in payloads for u in json.loads(p)["users"]]
    assert named == users  # each once, in order, none lost between payloads
