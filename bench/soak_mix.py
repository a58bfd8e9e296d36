"""The soak's realistic mix of requests, what each acknowledged, and the audit afterwards."""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import random
import time
import uuid
from pathlib import Path

import aiohttp
import jwt

from vibe.billing import signature as stripe_signature

JWT_SECRET = "soak-jwt-secret-with-at-least-thirty-two-characters"
WEBHOOK_SECRET = "whsec_soak"
WRITE_KEY = "wk_soak"
USERS = "/functions/v1/user-management"
ANALYTICS = "/functions/v1/analytics-tracking/event"
WEBHOOK = "/functions/v1/stripe-webhook"
EMAIL = "/functions/v1/email-notifications"
EVENTS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe" / "events"
HIGH = "100000000"


def token(claims: dict) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 86400, **claims}, JWT_SECRET, algorithm="HS256")


class Mix:
    """One request of the realistic mix at a time, spread over the servers; counts and audits."""

    def __init__(self, session: aiohttp.ClientSession, bases: list[str], rng: random.Random):
        self.session, self.bases, self.rng = session, bases, rng
        self.users: list[tuple[str, str]] = []  # (user id, token)
        self.service = {"Authorization": "Bearer " + token({"role": "service_role", "iss": "supabase"})}
        self.fixtures = {n: json.loads((EVENTS / f"{n}.json").read_text())
                         for n in ("customer.created", "invoice.payment_succeeded")}
        self.email = False
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter = collections.Counter()
        self.error_samples: list[str] = []
        self.acked_events: set[str] = set()
        self.paid_invoices: set[str] = set()
        self.acked_messages = 0
        self.acked_emails: set[str] = set()
        self.total_ok = self.total_errors = 0
        self.n = 0

    @staticmethod
    def server_env() -> dict[str, str]:
        limits = ",".join(f"{t}={HIGH}" for t in ("free", "starter", "pro", "expert", "admin"))
        return {"SUPABASE_JWT_SECRET": JWT_SECRET, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "ANALYTICS_WRITE_KEY": WRITE_KEY, "RATE_LIMITS": limits, "RATE_LIMIT_ANONYMOUS": HIGH,
                "RATE_LIMIT_SERVICE": HIGH, "STRIPE_PRICE_TIERS": "price_000000000000000000000000=pro",
                "EMAIL_BACKEND": "outbox", "EMAIL_POLL_SECONDS": "0.2", "STRIPE_POLL_SECONDS": "0.2"}

    def functions(self) -> list[str]:
        return ["check_access", "get_profile", "sync_progress", "analytics", "webhook"] + (["email"] * self.email)

    async def onboard(self, count: int) -> None:
        for _ in range(count):
            user_id = str(uuid.uuid4())
            tok = token({"sub": user_id, "aud": "authenticated", "role": "authenticated",
                         "email": f"{user_id[:8]}@soak.example.com"})
            status = await self.post(USERS, {"action": "create_profile", "data": {}}, {"Authorization": "Bearer " + tok},
                                     "create_profile")
            if status == 200:
                self.users.append((user_id, tok))
        async with self.session.post(self.bases[0] + EMAIL, json={}, headers=self.service) as resp:
            self.email = resp.status != 404

    async def post(self, path: str, body, headers: dict, name: str, data: bytes | None = None) -> int:
        base = self.bases[self.n % len(self.bases)]
        self.n += 1
        started = time.perf_counter()
        try:
            async with self.session.post(base + path, json=None if data else body, data=data, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            status, text = 0, repr(exc)
        else:
            text = f"{status}"
        if 200 <= status < 300:
            self.latencies[name].append(time.perf_counter() - started)
            self.total_ok += 1
        else:
            self.errors[name] += 1
            self.total_errors += 1
            if len(self.error_samples) < 20:
                self.error_samples.append(f"{name}: {text}")
        return status

    async def one(self) -> None:
        r = self.rng.random()
        user_id, tok = self.rng.choice(self.users)
        auth = {"Authorization": "Bearer " + tok}
        if r < 0.20:
            kind = self.rng.choice(["workshop", "commandment", "template"])
            await self.post(USERS, {"action": "check_access", "data": {
                "resource_type": kind, "resource_id": str(self.rng.randint(1, 10))}}, auth, "check_access")
        elif r < 0.30:
            await self.post(USERS, {"action": "get_profile", "data": {}}, auth, "get_profile")
        elif r < 0.40:
            items = [{"resource_type": "workshop", "resource_id": str(self.rng.randint(1, 10)),
                      "status": self.rng.choice(["in_progress", "completed"]), "progress": self.rng.randint(1, 100)}]
            await self.post(USERS, {"action": "sync_progress", "data": {"items": items}}, auth, "sync_progress")
        elif r < 0.75:
            await self.analytics(user_id)
        elif r < 0.90 or not self.email:
            await self.webhooks()
        else:
            await self.send_email(user_id)

    async def analytics(self, user_id: str) -> None:
        ids = [uuid.uuid4().hex for _ in range(5)]
        batch = [{"event": self.rng.choice(["Lesson Viewed", "Video Played", "Quiz Answered"]), "user_id": user_id,
                  "message_id": m, "properties": {"lesson": self.rng.randint(1, 40)}} for m in ids]
        if await self.post(ANALYTICS, {"batch": batch}, {"X-Write-Key": WRITE_KEY}, "analytics") == 200:
            self.acked_messages += len(ids)

    def event(self, name: str, **changes) -> dict:
        event = copy.deepcopy(self.fixtures[name])
        event["id"] = f"evt_{uuid.uuid4().hex[:24]}"
        event["created"] = int(time.time())
        event["data"]["object"].update(changes)
        return event

    async def webhook(self, event: dict) -> bool:
        body = json.dumps(event).encode()
        headers = {"Stripe-Signature": stripe_signature.sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
        ok = await self.post(WEBHOOK, None, headers, "webhook", data=body) == 200
        if ok:
            self.acked_events.add(event["id"])
        return ok

    async def webhooks(self) -> None:
        """A new paying customer: customer.created, then the paid invoice (1 in 10 delivered twice)."""
        k = uuid.uuid4().hex[:12]
        customer = self.event("customer.created", id=f"cus_{k}", email=f"{k}@soak.example.com",
                              metadata={"user_id": f"soak-{k}"})
        invoice = self.event("invoice.payment_succeeded", id=f"in_{k}", customer=f"cus_{k}", payment_intent=f"pi_{k}",
                             charge=f"ch_{k}", subscription=None)
        if await self.webhook(customer) and await self.webhook(invoice):
            self.paid_invoices.add(f"in_{k}")
            if self.rng.random() < 0.1:
                await self.webhook(invoice)

    async def send_email(self, user_id: str) -> None:
        key = uuid.uuid4().hex
        body = {"user_id": user_id, "type": "payment_confirmation", "idempotency_key": key,
                "data": {"amount": self.rng.randint(100, 9900), "currency": "usd"}}
        if await self.post(EMAIL, body, self.service, "email") in (200, 202):
            self.acked_emails.add(key)

    def reset_window(self) -> None:
        self.latencies.clear()
        self.errors.clear()

    def reset_totals(self) -> None:
        self.reset_window()
        self.total_ok = self.total_errors = 0
        self.error_samples.clear()

    async def audit(self, db) -> None:
        """Wait for the queues to drain, then check each acknowledged request took effect once."""
        await db.open()
        try:
            for _ in range(600):
                due = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status IN ('pending', 'failed')")
                mail = await db.fetchval("SELECT COUNT(*) FROM email_messages WHERE status IN "
                                         "('queued', 'sending', 'failed')") if self.email else 0
                if not due and not mail:
                    break
                await asyncio.sleep(0.5)
            stored = {r["id"]: r["status"] for r in await db.fetchall("SELECT id, status FROM stripe_events")}
            lost = self.acked_events - set(stored)
            statuses = collections.Counter(stored[e] for e in self.acked_events if e in stored)
            payments = await db.fetchall("SELECT invoice_id, COUNT(*) AS n FROM payments GROUP BY invoice_id")
            twice = [p for p in payments if p["n"] != 1]
            missing = self.paid_invoices - {p["invoice_id"] for p in payments}
            events = await db.fetchval("SELECT COUNT(*) FROM analytics_events WHERE source <> 'billing'")
            print(f"audit: Stripe events acknowledged {len(self.acked_events)}, lost {len(lost)}, "
                  f"statuses {dict(statuses)}", flush=True)
            print(f"audit: invoices paid {len(self.paid_invoices)}, payments recorded {len(payments)}, "
                  f"missing {len(missing)}, recorded twice {len(twice)}", flush=True)
            print(f"audit: analytics events acknowledged {self.acked_messages}, stored {events}", flush=True)
            if self.email:
                await self.audit_email(db)
            if self.error_samples:
                print("error samples:", "; ".join(self.error_samples), flush=True)
        finally:
            await db.close()

    async def audit_email(self, db) -> None:
        rows = await db.fetchall("SELECT id, idempotency_key, status FROM email_messages")
        by_key = {r["idempotency_key"].removeprefix("api:"): r for r in rows}
        mine = [by_key[k] for k in self.acked_emails if k in by_key]
        statuses = collections.Counter(r["status"] for r in mine)
        outbox = Path(self.outbox_dir) if getattr(self, "outbox_dir", None) else None
        files = len(list(outbox.glob("*.eml"))) if outbox and outbox.exists() else None
        every = collections.Counter(r["status"] for r in rows)
        print(f"audit: emails requested and acknowledged {len(self.acked_emails)}, stored {len(mine)}, statuses "
              f"{dict(statuses)}; all messages (welcome and receipts included) {len(rows)} {dict(every)}, "
              f".eml files in the outbox {files}", flush=True)
