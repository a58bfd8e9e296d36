"""The mail provider fails (500s, then timeouts, then 429s): the breaker opens, mail stays
queued, and after recovery every message is delivered exactly once."""

import asyncio
import time

import pytest
from conftest import wait_until
from email_support import FakeResend, add_profile, fake_resend, queue, resend_env  # noqa: F401 (fixture)

from vibe.ops.keys import BREAKERS

pytestmark = pytest.mark.reliability

MESSAGES = 12


async def test_provider_failures_open_the_breaker_and_nothing_is_lost_or_sent_twice(start_service, fake_resend):
    fake: FakeResend = fake_resend
    service = await start_service(**resend_env(
        fake, VIBE_EMAIL_SCHEDULER="false", EMAIL_BREAKER_THRESHOLD="3", EMAIL_BREAKER_RESET_SECONDS="0.5",
        EMAIL_SEND_TIMEOUT_SECONDS="0.3", EMAIL_MAX_ATTEMPTS="1000", EMAIL_RETRY_MAX_SECONDS="0.3"))
    breaker = service.app[BREAKERS].get("email:resend")

    # Phase 1: the provider answers 500 to everything.
    fake.down = True
    ids = []
    for n in range(MESSAGES):
        user = await add_profile(service.db)
        resp = await queue(service, user, "payment_confirmation", {"amount": 1000 + n, "currency": "usd"},
                           key=f"order-{n}")
        assert resp.status == 202, await resp.text()
        ids.append((await resp.json())["id"])

    async def opened() -> bool:
        return breaker.opened >= 1

    await wait_until(opened, 10)
    assert fake.sent == {}

    async def statuses() -> set:
        rows = await service.db.fetchall("SELECT status FROM email_messages")
        return {r["status"] for r in rows}

    assert await statuses() <= {"queued", "failed", "sending"}  # waiting, never dead, never dropped
    # While open, the worker stops calling: over a second only the half-open probes get through.
    before = len(fake.requests)
    await asyncio.sleep(1.0)
    assert len(fake.requests) - before <= 4, "the breaker let the worker hammer a failing provider"

    # Phase 2: the provider hangs past the send timeout (it may accept late: Resend's
    # Idempotency-Key makes the retry of such a message the same email).
    fake.down = False
    fake.delay = 1.0
    opened_before = breaker.opened
    deadline = time.monotonic() + 10
    while breaker.opened == opened_before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert breaker.opened > opened_before, "timeouts did not reopen the breaker"

    # Phase 3: rate limited, with Retry-After.
    fake.delay = 0.0
    fake.fail_with(429, times=4, headers={"Retry-After": "1"})

    # Recovery: everything goes out, once.
    async def all_sent() -> bool:
        return await statuses() == {"sent"}

    await wait_until(all_sent, 30)
    assert breaker.state == "closed" and fake.script == []  # the 429s were met and waited out
    keys = [r["headers"].get("Idempotency-Key") for r in fake.requests]
    assert len(fake.sent) == MESSAGES, f"{len(fake.sent)} emails accepted by the provider for {MESSAGES} messages"
    assert set(fake.by_key) == {f"vibe-email-{i}" for i in ids}
    assert len(keys) > MESSAGES  # there were retries, and they carried the same keys
    rows = await service.db.fetchall("SELECT provider_id FROM email_messages")
    assert {r["provider_id"] for r in rows} == set(fake.sent)
