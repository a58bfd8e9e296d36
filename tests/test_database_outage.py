"""The database goes away: 503 (never a 2xx for what was not stored), then recovery, no restart."""

import sqlite3
import urllib.parse
import uuid

import pytest
from conftest import ON_POSTGRES, make_event, postgres_only
from databases import with_param


def customer_event(n: int) -> dict:
    return make_event("customer.created", {"id": f"cus_out{n}", "object": "customer",
                                           "metadata": {"user_id": f"outage-{n}"}})


@postgres_only
async def test_postgres_going_away_answers_503_then_recovers(start_service, database_url, proxy):
    parts = urllib.parse.urlsplit(database_url)
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    service = await start_service(DATABASE_URL=via_proxy, DB_CONNECTION_TIMEOUT="1000")
    first, second, third = customer_event(1), customer_event(2), customer_event(3)
    await service.deliver(first)

    await proxy.cut()
    for event in (second, third):
        resp = await service.post_event(event)
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "database_unavailable" and resp.headers["Retry-After"]
    health = await service.client.get("/health")
    assert health.status == 503 and (await health.json())["status"] == "unhealthy"

    await proxy.restore()
    # Stripe retries what got a 503; the service takes it without a restart.
    answers = await service.deliver(second, third, first)
    assert [a["duplicate"] for a in answers] == [False, False, True]
    assert (await service.client.get("/health")).status == 200
    for n in (1, 2, 3):
        assert (await service.user(f"outage-{n}"))["stripe_customer_id"] == f"cus_out{n}"


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite-only: the file is locked by another process")
async def test_sqlite_locked_by_another_process_answers_503_then_recovers(start_service, database_url):
    service = await start_service(DB_CONNECTION_TIMEOUT="200")
    await service.deliver(customer_event(1))
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        resp = await service.post_event(customer_event(2))
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "database_unavailable"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    answers = await service.deliver(customer_event(2))
    assert answers[0]["duplicate"] is False
    assert (await service.user("outage-2"))["stripe_customer_id"] == "cus_out2"


@postgres_only
async def test_connections_killed_by_the_server_are_replaced_without_losing_requests(start_service, database_url):
    name = f"vibe-test-{uuid.uuid4().hex[:8]}"  # kill this test's connections only
    service = await start_service(DATABASE_URL=with_param(database_url, "application_name", name))
    await service.deliver(customer_event(1))
    killed = await service.db.fetchval(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND application_name = %s", (name,),
    )
    assert killed >= 1
    answers = await service.deliver(customer_event(2), customer_event(3))
    assert [a["duplicate"] for a in answers] == [False, False]


@postgres_only
async def test_a_lock_never_released_fails_the_wait_and_the_pool_goes_on(database_url):
    import psycopg2

    from vibe.config import Settings
    from vibe.db.database import DatabaseUnavailable, create_database

    db = create_database(Settings.from_env({"DATABASE_URL": database_url, "DB_CONNECTION_TIMEOUT": "2000",
                                            "MAX_DB_CONNECTIONS": "1"}))
    assert db.lock_timeout == 62  # DB_CONNECTION_TIMEOUT + 60 s, as aiopg's own timeout was
    db.lock_timeout = 0.2  # to see it act within a test
    await db.open()
    holder = psycopg2.connect(database_url)
    try:
        await db.execute("CREATE TABLE held (id INTEGER PRIMARY KEY)")
        await db.execute("INSERT INTO held VALUES (1)")
        with holder.cursor() as cur:  # a transaction that keeps the row locked
            cur.execute("SELECT * FROM held WHERE id = 1 FOR UPDATE")
        with pytest.raises(DatabaseUnavailable, match="lock timeout"):  # 503 to a client: try later
            await db.execute("UPDATE held SET id = 2 WHERE id = 1")
        # the pool goes on, on a new connection with the same bound
        assert await db.fetchval("SHOW lock_timeout") == "200ms"
        assert await db.fetchval("SELECT COUNT(*) FROM held") == 1
    finally:
        holder.close()
        await db.close()
