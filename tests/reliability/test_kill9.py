"""kill -9 of `python run.py serve` during a flood: after a restart, every 2xx took effect once.

The flood mixes signed Stripe events (a customer, then their invoice, each delivered twice),
analytics batches and email requests. The server is killed while requests are in flight, restarted on the same
port, and the clients retry what was not acknowledged (and some of what was), as Stripe and
the analytics SDKs do.
"""

import asyncio
import signal
import uuid
from pathlib import Path

import aiohttp
import pytest
import tokens
from analytics_support import WRITE_KEY
from conftest import load_event, signed, wait_until
from live_service import LiveService, open_db, settle_stripe

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BATCH = "/functions/v1/analytics-tracking/event"
EMAIL = "/functions/v1/email-notifications"
LEARNERS = [f"k9-learner-{i}" for i in range(8)]
WEBHOOK = "/functions/v1/stripe-webhook"


def customer_events(n: int) -> tuple[dict, dict]:
    customer = load_event("customer.created")
    customer["id"] = f"evt_c{n}_{uuid.uuid4().hex[:12]}"
    customer["data"]["object"].update(id=f"cus_k9_{n}", email=f"k9-{n}@example.com",
                                      metadata={"user_id": f"k9-user-{n}"})
    invoice = load_event("invoice.payment_succeeded")
    invoice["id"] = f"evt_i{n}_{uuid.uuid4().hex[:12]}"
    invoice["created"] = customer["created"] + 1
    invoice["data"]["object"].update(id=f"in_k9_{n}", customer=f"cus_k9_{n}", payment_intent=f"pi_k9_{n}",
                                     charge=f"ch_k9_{n}", subscription=None)
    return customer, invoice


class Flood:
    def __init__(self, base: str):
        self.base = base
        self.acked_events: set[str] = set()
        self.acked_batches: dict[int, list[str]] = {}
        self.acked_mail: set[str] = set()
        self.pending: list = []  # what a client would retry

    async def webhook(self, session, event) -> bool:
        body, headers = signed(event)
        try:
            async with session.post(self.base + WEBHOOK, data=body, headers=headers) as resp:
                if resp.status == 200:
                    self.acked_events.add(event["id"])
                    return True
        except aiohttp.ClientError:
            pass
        return False

    async def batch(self, session, n: int) -> bool:
        ids = [f"k9-b{n}-{i}" for i in range(10)]
        body = {"batch": [{"event": "Flood", "user_id": f"k9-user-{n}", "message_id": m} for m in ids]}
        try:
            async with session.post(self.base + BATCH, json=body, headers={"X-Write-Key": WRITE_KEY}) as resp:
                if resp.status == 200:
                    self.acked_batches[n] = ids
                    return True
        except aiohttp.ClientError:
            pass
        return False

    async def mail(self, session, n: int) -> bool:
        body = {"user_id": LEARNERS[n % len(LEARNERS)], "type": "payment_confirmation", "idempotency_key": f"k9-{n}",
                "data": {"amount": 1000 + n % 1000, "currency": "eur"}}
        try:
            async with session.post(self.base + EMAIL, json=body,
                                    headers=tokens.auth(tokens.service_token())) as resp:
                if resp.status in (200, 202):
                    self.acked_mail.add(f"api:k9-{n}")
                    return True
        except aiohttp.ClientError:
            pass
        return False

    async def client(self, session, worker: int, count: int) -> None:
        for i in range(count):
            n = worker * 10_000 + i
            customer, invoice = customer_events(n)
            self.pending.append(("stripe", customer, invoice, n))
            ok = await self.webhook(session, customer) and await self.webhook(session, customer)
            ok = ok and await self.webhook(session, invoice) and await self.webhook(session, invoice)
            ok = await self.batch(session, n) and ok
            ok = await self.mail(session, n) and ok
            if not ok:
                return  # the server is gone


async def test_every_acknowledged_request_takes_effect_once_after_kill_9(env):
    server = await LiveService({**env, "ANALYTICS_WRITE_KEY": WRITE_KEY, "EMAIL_POLL_SECONDS": "0.05",
                                "EMAIL_SENDING_LEASE_SECONDS": "1", "VIBE_EMAIL_SCHEDULER": "false"},
                               "--shutdown-timeout", "5").start()
    flood = Flood(server.url)
    try:
        async with aiohttp.ClientSession() as session:
            for learner in LEARNERS:  # the people the mails go to
                async with session.post(server.url + "/functions/v1/user-management",
                                        json={"action": "create_profile", "data": {}},
                                        headers=tokens.auth(tokens.user_token(learner))) as resp:
                    assert resp.status == 200
            clients = [asyncio.create_task(flood.client(session, w, 400)) for w in range(8)]
            while len(flood.acked_events) < 200 and not all(c.done() for c in clients):
                await asyncio.sleep(0.005)
            await server.stop(signal.SIGKILL)  # mid-flood, requests in flight
            await asyncio.gather(*clients)
            assert len(flood.acked_events) >= 200

            await server.start()
            # Clients retry everything (acknowledged or not): a retry must change nothing.
            for _, customer, invoice, n in flood.pending:
                assert await flood.webhook(session, customer)
                assert await flood.webhook(session, invoice)
                assert await flood.batch(session, n)
                assert await flood.mail(session, n)
        db = await open_db(env["DATABASE_URL"])
        try:
            await settle_stripe(db)  # the restarted server's workers finish what was stored

            async def mail_done() -> bool:
                return not await db.fetchval(
                    "SELECT COUNT(*) FROM email_messages WHERE status IN ('queued', 'sending', 'failed')")

            await wait_until(mail_done, 30)
        finally:
            await db.close()
    finally:
        await server.stop()

    db = await open_db(env["DATABASE_URL"])
    try:
        stored = {r["id"]: r["status"] for r in await db.fetchall("SELECT id, status FROM stripe_events")}
        assert flood.acked_events <= set(stored), "acknowledged Stripe events were lost"
        assert {stored[e] for e in flood.acked_events} == {"processed"}
        payments = await db.fetchall("SELECT invoice_id, COUNT(*) AS n FROM payments GROUP BY invoice_id")
        assert {p["invoice_id"] for p in payments} == {f"in_k9_{n}" for _, _, _, n in flood.pending}
        assert {p["n"] for p in payments} == {1}, "a payment was recorded twice"
        events = await db.fetchall("SELECT message_id, COUNT(*) AS n FROM analytics_events WHERE event = %s GROUP BY message_id", ("Flood",))
        counts = {e["message_id"]: e["n"] for e in events}
        expected = {m for ids in flood.acked_batches.values() for m in ids}
        assert expected <= set(counts) and set(counts.values()) == {1}
        total = await db.fetchval("SELECT SUM(n) FROM analytics_counts WHERE event = %s AND granularity = %s",
                                  ("Flood", "day"))
        assert total == len(counts), "the rollups counted an event twice (or missed one)"
        revenue = await db.fetchval("SELECT COUNT(*) FROM analytics_events WHERE event = 'subscription_event'")
        assert revenue == len(payments)  # one revenue event per payment, never two
        mails = {r["idempotency_key"]: r for r in await db.fetchall("SELECT * FROM email_messages")}
        assert flood.acked_mail <= set(mails), "acknowledged email requests were lost"
        assert {mails[k]["status"] for k in flood.acked_mail} == {"sent"}
        sends = await db.fetchall("SELECT email_id, COUNT(*) AS n FROM email_message_events "
                                  "WHERE status = 'sent' GROUP BY email_id")
        assert {r["email_id"] for r in sends} == {m["id"] for m in mails.values()}
        assert {r["n"] for r in sends} == {1}, "a message was sent twice"
        outbox = list((Path(env["VIBE_DATA_DIR"]) / "outbox").glob("*.eml"))
        assert len(outbox) == len(mails)
    finally:
        await db.close()
