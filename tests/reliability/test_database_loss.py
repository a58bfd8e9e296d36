"""PostgreSQL goes away in the middle of a mixed load, and comes back.

Every answer during the outage is a 2xx for what was stored or a 503 (never another 5xx, never
a 2xx for what was not stored); /health says unhealthy; within seconds of the database coming
back the same process serves again; nothing acknowledged is lost, and the retries of what got
a 503 take effect once.
"""

import asyncio
import time
import urllib.parse
import uuid

import psycopg2
import pytest
import tokens
from conftest import make_event, postgres_only
from databases import with_param

pytestmark = [pytest.mark.reliability, postgres_only]

BATCH = "/functions/v1/analytics-tracking/event"
USERS = "/functions/v1/user-management"
WRITE_KEY = "wk_outage"
EMAIL = "/functions/v1/email-notifications"


class MixedLoad:
    """Webhooks, analytics batches and sign-ups from concurrent clients, every answer recorded."""

    def __init__(self, service):
        self.service = service
        self.answers: list[tuple[str, int, str]] = []  # (kind, status, error code)
        self.acked_events: set[str] = set()
        self.acked_messages: set[str] = set()
        self.acked_users: set[str] = set()
        self.acked_mail: set[str] = set()
        self.learner = ""
        self.retry: list = []
        self.stop = asyncio.Event()

    async def record(self, kind: str, resp) -> bool:
        body = await resp.json()
        code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
        self.answers.append((kind, resp.status, code))
        return 200 <= resp.status < 300

    async def webhook(self, n: int) -> bool:
        event = make_event("customer.created", {"id": f"cus_loss{n}", "object": "customer",
                                                "metadata": {"user_id": f"loss-{n}"}})
        if await self.record("webhook", await self.service.post_event(event)):
            self.acked_events.add(event["id"])
            return True
        self.retry.append(("webhook", event))
        return False

    async def batch(self, n: int) -> bool:
        ids = [f"loss-{n}-{i}" for i in range(5)]
        body = {"batch": [{"event": "Outage", "user_id": f"loss-{n}", "message_id": m} for m in ids]}
        resp = await self.service.client.post(BATCH, json=body, headers={"X-Write-Key": WRITE_KEY})
        if await self.record("analytics", resp):
            self.acked_messages.update(ids)
            return True
        self.retry.append(("analytics", body))
        return False

    async def signup(self) -> bool:
        user_id = str(uuid.uuid4())
        resp = await self.service.client.post(USERS, json={"action": "create_profile", "data": {}},
                                              headers=tokens.auth(tokens.user_token(user_id)))
        if await self.record("user", resp):
            self.acked_users.add(user_id)
            return True
        return False

    async def mail(self, n: int) -> bool:
        body = {"user_id": self.learner, "type": "payment_confirmation", "idempotency_key": f"loss-{n}",
                "data": {"amount": 100 + n % 900, "currency": "usd"}}
        resp = await self.service.client.post(EMAIL, json=body, headers=tokens.auth(tokens.service_token()))
        if await self.record("email", resp):
            self.acked_mail.add(f"api:loss-{n}")
            return True
        self.retry.append(("email", body))
        return False

    async def start(self, clients: int) -> list[asyncio.Task]:
        self.learner = str(uuid.uuid4())  # the one the mails go to
        resp = await self.service.client.post(USERS, json={"action": "create_profile", "data": {}},
                                              headers=tokens.auth(tokens.user_token(self.learner)))
        assert resp.status == 200
        return [asyncio.create_task(self.client(w)) for w in range(clients)]

    async def client(self, worker: int) -> None:
        n = worker * 100_000
        while not self.stop.is_set():
            n += 1
            await asyncio.gather(self.webhook(n), self.batch(n), self.signup(), self.mail(n))
            await asyncio.sleep(0.01)


async def retry_and_verify(service, load: MixedLoad) -> None:
    """Retry what got a 503 (as Stripe and the SDKs do), then check every 2xx is stored once."""
    for kind, item in load.retry:
        if kind == "webhook":
            assert (await service.post_event(item)).status == 200
            load.acked_events.add(item["id"])
        elif kind == "email":
            resp = await service.client.post(EMAIL, json=item, headers=tokens.auth(tokens.service_token()))
            assert resp.status in (200, 202)
            load.acked_mail.add("api:" + item["idempotency_key"])
        else:
            resp = await service.client.post(BATCH, json=item, headers={"X-Write-Key": WRITE_KEY})
            assert resp.status == 200
            load.acked_messages.update(e["message_id"] for e in item["batch"])
    await service.settle(timeout=30)

    db = service.db
    stored_events = {r["id"] for r in await db.fetchall("SELECT id FROM stripe_events")}
    assert load.acked_events <= stored_events
    assert await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status <> 'processed'") == 0
    rows = await db.fetchall("SELECT message_id FROM analytics_events WHERE event = 'Outage'")
    assert load.acked_messages == {r["message_id"] for r in rows} and len(rows) == len(load.acked_messages)
    users = {r["id"] for r in await db.fetchall("SELECT id FROM profiles")}
    assert load.acked_users <= users
    mails = await db.fetchall("SELECT idempotency_key FROM email_messages WHERE idempotency_key LIKE 'api:%'")
    assert load.acked_mail == {m["idempotency_key"] for m in mails}


async def run_outage(service, cut, restore):
    load = MixedLoad(service)
    clients = await load.start(4)
    try:
        await asyncio.sleep(0.5)
        await cut()
        await asyncio.sleep(1.5)
        health = await service.client.get("/health")
        assert health.status == 503 and (await health.json())["status"] == "unhealthy"
        await restore()
        restored = time.monotonic()
        ok_before = sum(1 for _, s, _ in load.answers if s < 300)
        while sum(1 for _, s, _ in load.answers if s < 300) < ok_before + 30:
            assert time.monotonic() - restored < 20, "no recovery within 20 s of the database coming back"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        load.stop.set()
        await asyncio.gather(*clients)
    assert (await service.client.get("/health")).status == 200

    statuses = {(kind, status, code) for kind, status, code in load.answers if status >= 300}
    assert statuses, "the outage was never seen"
    assert {s for _, s, _ in statuses} == {503}, statuses
    assert {c for _, _, c in statuses} <= {"database_unavailable", "analytics_overloaded"}, statuses

    await retry_and_verify(service, load)
    return load


async def test_postgres_cut_mid_load_answers_503_and_recovers_without_restart(start_service, database_url,
                                                                            proxy):
    parts = urllib.parse.urlsplit(database_url)
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    # The anonymous limit is raised: under this load the adaptive limiter shrinks it, and the
    # test's own anonymous /health probes are about the database, not the limiter.
    service = await start_service(DATABASE_URL=via_proxy, DB_CONNECTION_TIMEOUT="1000",
                                  ANALYTICS_WRITE_KEY=WRITE_KEY, RATE_LIMIT_ANONYMOUS="1000000")
    load = await run_outage(service, proxy.cut, proxy.restore)
    assert any(s == 503 for _, s, _ in load.answers)


async def test_backends_terminated_mid_load_lose_nothing(start_service, database_url):
    name = f"vibe-rel-{uuid.uuid4().hex[:8]}"  # only this test's own connections are terminated
    service = await start_service(DATABASE_URL=with_param(database_url, "application_name", name),
                                  ANALYTICS_WRITE_KEY=WRITE_KEY, DB_CONNECTION_TIMEOUT="1000",
                                  RATE_LIMIT_ANONYMOUS="1000000")
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    terminated = 0

    async def cut():
        nonlocal terminated
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND application_name = %s", (name,))
            terminated += cur.fetchone()[0]

    try:
        load = MixedLoad(service)
        clients = await load.start(4)
        await asyncio.sleep(0.5)
        for _ in range(5):
            await cut()
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        load.stop.set()
        await asyncio.gather(*clients)
    finally:
        admin.close()
    assert terminated >= 1
    bad = {(k, s, c) for k, s, c in load.answers if s >= 300}
    assert {s for _, s, _ in bad} <= {503}, bad
    await retry_and_verify(service, load)
