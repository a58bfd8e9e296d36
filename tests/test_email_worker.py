"""The worker's life cycle: it drains in-flight sends on shutdown, takes over messages whose
sender died mid-send, and configuration mistakes are one clear line at start-up."""

import time

import pytest
from email_support import (  # noqa: F401
    add_profile,
    fake_resend,
    queue,
    resend_env,
    start_email,
    wait_status,
)

from vibe.config import ConfigError, Settings
from vibe.db.database import create_database
from vibe.email.worker import EmailWorker, Outcome


async def test_shutdown_waits_for_sends_in_flight_and_records_them(start_email, fake_resend):
    service = await start_email(**resend_env(fake_resend))
    fake_resend.delay = 0.5
    user = await add_profile(service.db)
    ids = [(await (await queue(service, user, "welcome", key=f"d{i}")).json())["id"] for i in range(3)]

    async def in_flight():
        return len(fake_resend.requests) == 3

    from conftest import wait_until

    await wait_until(in_flight)
    await service.client.close()  # runs the cleanup contexts while the three sends are out
    db = create_database(service.settings)
    await db.open()
    try:
        rows = await db.fetchall("SELECT id, status, provider_id FROM email_messages ORDER BY id")
    finally:
        await db.close()
    assert [r["id"] for r in rows] == ids
    assert {r["status"] for r in rows} == {"sent"} and all(r["provider_id"] for r in rows)


async def insert_sending(db, key: str, user: str, claimed: float) -> None:
    """A welcome message some worker claimed at `claimed` and is sending."""
    await db.execute(
        "INSERT INTO email_messages (idempotency_key, user_id, recipient, type, category, data, status, "
        "attempts, next_attempt_at, claimed_at, message_id, created_at, updated_at) "
        "VALUES (%s, %s, %s, 'welcome', 'transactional', '{}', 'sending', 0, %s, %s, %s, %s, %s)",
        (key, user, f"{user}@example.com", claimed, claimed, f"<{key}@localhost>", claimed, claimed),
    )


async def test_a_message_whose_sender_died_mid_send_is_taken_over(start_email):
    service = await start_email(EMAIL_SENDING_LEASE_SECONDS="60")
    user = await add_profile(service.db)
    for key, claimed in (("stale", time.time() - 120), ("fresh", time.time())):
        await insert_sending(service.db, key, user, claimed)
    stale = await service.db.fetchval("SELECT id FROM email_messages WHERE idempotency_key = 'stale'")
    row = await wait_status(service, stale, "sent")
    assert row["status"] == "sent"
    assert await service.db.fetchval("SELECT status FROM email_messages WHERE idempotency_key = 'fresh'") == "sending"


async def test_a_result_for_a_lease_taken_over_is_not_written(start_email):
    """Results are written many per statement; one whose lease another claim took over (its
    claimed_at no longer matches) changes nothing and adds no history line."""
    service = await start_email(VIBE_EMAIL_WORKER="false")
    user = await add_profile(service.db)
    claimed = time.time()
    for key in ("ours", "taken"):
        await insert_sending(service.db, key, user, claimed)
    ids = {r["idempotency_key"]: r["id"] for r in await service.db.fetchall(
        "SELECT id, idempotency_key FROM email_messages")}
    worker = EmailWorker(service.db, service.settings, None, None, None, None)
    async with service.db.transaction() as tx:
        await worker._write_results(tx, [
            Outcome(id=ids["ours"], claimed_at=claimed, status="sent", attempts=1, provider_id="re_1"),
            Outcome(id=ids["taken"], claimed_at=claimed - 60, status="failed", attempts=1, error="timeout",
                    next_attempt_at=claimed + 5),
        ])
    rows = {r["idempotency_key"]: r for r in await service.db.fetchall("SELECT * FROM email_messages")}
    assert rows["ours"]["status"] == "sent" and rows["ours"]["provider_id"] == "re_1" and rows["ours"]["sent_at"]
    assert rows["ours"]["claimed_at"] is None and rows["ours"]["attempts"] == 1
    assert rows["taken"]["status"] == "sending" and rows["taken"]["attempts"] == 0
    history = await service.db.fetchall("SELECT email_id, status, detail FROM email_message_events ORDER BY id")
    assert [(h["email_id"], h["status"], h["detail"]) for h in history] == [(ids["ours"], "sent", "provider id re_1")]


@pytest.mark.parametrize("env, message", [
    ({"EMAIL_BACKEND": "carrier-pigeon"}, "EMAIL_BACKEND"),
    ({"EMAIL_BACKEND": "smtp"}, "EMAIL_SMTP_URL: required"),
    ({"EMAIL_SMTP_URL": "http://mail"}, "EMAIL_SMTP_URL"),
    ({"EMAIL_BACKEND": "resend"}, "EMAIL_SERVICE_KEY"),
    ({"PUBLIC_URL": "learn.example.com"}, "PUBLIC_URL"),
    ({"EMAIL_FROM": "nobody"}, "EMAIL_FROM"),
    ({"EMAIL_CONCURRENCY": "0"}, "EMAIL_CONCURRENCY"),
])
def test_configuration_mistakes_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
