"""The SMTP sender against a real SMTP server on loopback, and the Resend sender's contract
against a local server that behaves like Resend's API (429s and 500s included)."""

import asyncio

from email_support import (  # noqa: F401
    add_profile,
    fake_resend,
    queue,
    resend_env,
    smtp_server,
    start_email,
    wait_status,
)

from vibe.web.times import to_seconds


async def test_smtp_end_to_end_with_login(smtp_server, start_email):
    service = await start_email(EMAIL_BACKEND="smtp", EMAIL_SMTP_URL=f"smtp://mailer:s3cret@127.0.0.1:{smtp_server.port}",
                                EMAIL_FROM="Vibe <hello@vibe.test>", PUBLIC_URL="https://learn.example.com")
    user = await add_profile(service.db, full_name="Ada Lovelace")
    ids = []
    for kind, data in (("payment_confirmation", {"amount": 4900, "currency": "usd"}),
                       ("achievement", {"achievement": {"key": "streak", "name": "Seven-day streak"}})):
        ids.append((await (await queue(service, user, kind, data)).json())["id"])
    for email_id in ids:
        await wait_status(service, email_id, "sent")
    assert smtp_server.logins and set(smtp_server.logins) == {"mailer"}
    assert smtp_server.envelopes == [("hello@vibe.test", [f"{user}@example.com"])] * 2
    receipt, achievement = sorted(smtp_server.messages, key=lambda m: m["Subject"])[::-1]
    assert receipt["Subject"] == "Your receipt: $49.00 paid" and receipt["From"] == "Vibe <hello@vibe.test>"
    assert receipt.is_multipart() and receipt.get_content_type() == "multipart/alternative"
    assert "Hi Ada" in receipt.get_body(("plain",)).get_content()
    assert "<strong>$49.00</strong>" in receipt.get_body(("html",)).get_content()
    assert receipt["List-Unsubscribe"] is None and receipt["Message-ID"]
    assert achievement["Subject"] == "Achievement unlocked: Seven-day streak"
    assert achievement["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://learn.example.com/functions/v1/email-notifications/unsubscribe?token=" in achievement["List-Unsubscribe"]
    assert len({m["Message-ID"] for m in smtp_server.messages}) == 2


async def test_smtp_permanent_refusal_is_dead_and_temporary_is_retried(smtp_server, start_email):
    service = await start_email(EMAIL_BACKEND="smtp", EMAIL_SMTP_URL=f"smtp://127.0.0.1:{smtp_server.port}",
                                EMAIL_RETRY_BASE_SECONDS="0.05", EMAIL_RETRY_MAX_SECONDS="0.1")
    refused = await add_profile(service.db, email_address="gone@example.com")
    busy = await add_profile(service.db, email_address="busy@example.com")
    smtp_server.refuse = {"gone@example.com": "550 5.1.1 No such user", "busy@example.com": "451 4.3.0 Try later"}
    dead = (await (await queue(service, refused, "welcome")).json())["id"]
    retried = (await (await queue(service, busy, "welcome")).json())["id"]
    row = await wait_status(service, dead, "dead")
    assert row["attempts"] == 1 and "550" in row["last_error"]
    await wait_status(service, retried, "failed")
    del smtp_server.refuse["busy@example.com"]
    row = await wait_status(service, retried, "sent")
    assert row["attempts"] >= 2 and "failed" in [h["status"] for h in row["history"]]
    assert [to for _, to in smtp_server.envelopes] == [["busy@example.com"]]


async def test_resend_contract_headers_body_and_provider_id(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend), EMAIL_FROM="Vibe <hello@vibe.test>")
    user = await add_profile(service.db)
    email_id = (await (await queue(service, user, "weekly_progress")).json())["id"]
    row = await wait_status(service, email_id, "sent")
    [request] = fake_resend.requests
    assert request["headers"]["Authorization"] == "Bearer re_test_key"
    assert request["headers"]["Idempotency-Key"] == f"vibe-email-{email_id}"
    body = request["body"]
    assert body["from"] == "Vibe <hello@vibe.test>" and body["to"] == [f"{user}@example.com"]
    assert body["subject"].startswith("Your week on Vibe Coding Bible") and body["html"] and body["text"]
    assert body["headers"]["Message-ID"] == row["message_id"]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {"name": "email_id", "value": str(email_id)} in body["tags"]
    assert row["provider_id"] in fake_resend.sent


async def test_resend_429_and_500_are_retried_with_the_same_idempotency_key(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend))
    user = await add_profile(service.db)
    fake_resend.fail_with(500)
    fake_resend.fail_with(429, headers={"Retry-After": "1"})
    email_id = (await (await queue(service, user, "welcome")).json())["id"]
    row = await wait_status(service, email_id, "sent")
    assert row["attempts"] == 3 and len(fake_resend.requests) == 3
    assert {r["headers"]["Idempotency-Key"] for r in fake_resend.requests} == {f"vibe-email-{email_id}"}
    assert len(fake_resend.sent) == 1
    history = [(h["status"], h["detail"] or "", to_seconds(h["at"])) for h in row["history"]]  # ISO 8601
    assert [s for s, _, _ in history] == ["queued", "sending", "failed", "sending", "failed", "sending", "sent"]
    assert "resend 500" in history[2][1] and "resend 429" in history[4][1]
    # The 429 asked for a second: the third attempt did not come sooner, although
    # EMAIL_RETRY_MAX_SECONDS is 0.2.
    assert history[5][2] - history[4][2] >= 1.0


async def test_resend_422_and_400_give_up_at_once(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend))
    user = await add_profile(service.db)
    for status in (422, 400):
        fake_resend.fail_with(status)
        email_id = (await (await queue(service, user, "welcome", key=f"k{status}")).json())["id"]
        row = await wait_status(service, email_id, "dead")
        assert row["attempts"] == 1 and f"resend {status}" in row["last_error"]
    assert len(fake_resend.requests) == 2


async def test_dead_letters_after_max_attempts_and_retry_requeues(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend, EMAIL_MAX_ATTEMPTS="3", EMAIL_BREAKER_THRESHOLD="100"))
    user = await add_profile(service.db)
    fake_resend.down = True
    email_id = (await (await queue(service, user, "welcome")).json())["id"]
    row = await wait_status(service, email_id, "dead")
    assert row["attempts"] == 3 and len(fake_resend.requests) == 3
    fake_resend.down = False
    from vibe.email.cli import requeue_dead
    from vibe.email.keys import EMAIL_WORKER

    assert await requeue_dead(service.db) == [email_id]
    service.app[EMAIL_WORKER].wake()
    row = await wait_status(service, email_id, "sent")
    assert row["attempts"] == 1 and "requeued by an operator" in [h["detail"] for h in row["history"]][-3]
    assert await requeue_dead(service.db) == []


async def test_circuit_breaker_stops_calls_while_open_and_closes_after_a_probe(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend, EMAIL_BREAKER_THRESHOLD="2",
                                             EMAIL_BREAKER_RESET_SECONDS="0.5", EMAIL_CONCURRENCY="1",
                                             EMAIL_RETRY_MAX_SECONDS="0.05", EMAIL_MAX_ATTEMPTS="50"))
    from vibe.ops.keys import BREAKERS

    breaker = service.app[BREAKERS].get("email:resend")
    user = await add_profile(service.db)
    fake_resend.down = True
    ids = [(await (await queue(service, user, "welcome", key=f"b{i}")).json())["id"] for i in range(3)]

    async def opened():
        return breaker.state == "open"

    from conftest import wait_until

    await wait_until(opened)
    calls = len(fake_resend.requests)
    await asyncio.sleep(0.3)  # open: nothing is sent
    assert len(fake_resend.requests) == calls and breaker.opened >= 1
    fake_resend.down = False
    for email_id in ids:
        await wait_status(service, email_id, "sent")
    assert breaker.state == "closed" and breaker.opened >= 1 and len(fake_resend.sent) == 3
