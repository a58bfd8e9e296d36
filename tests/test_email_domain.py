"""Mail queued by domain hooks in the transaction of its cause: a payment event's receipt is sent
exactly once across redelivery and `events replay`; welcome, failure, commission, progress.
And the scheduler: each weekly report once per ISO week, and the expiring reminder."""

import asyncio
import time
import uuid

import tokens
from conftest import load_event, make_event, run_cli, wait_until
from email_support import add_profile, outbox, start_email, wait_status  # noqa: F401

from vibe.email.keys import EMAIL_RENDERER
from vibe.email.schedule import iso_week, run_schedule


def fixture_event(name: str) -> dict:
    """A fixture event under an id of its own (the fixtures share one id)."""
    event = load_event(name)
    event["id"] = f"evt_{name.replace('.', '_')}"
    return event


async def link_customer(service, user_id="learner-1", email="learner@example.com", customer="cus_00000000000000"):
    await service.deliver(make_event("customer.created", {"id": customer, "object": "customer", "email": email,
                                                          "name": "Lin Learner", "metadata": {"user_id": user_id}}))


async def emails(service, kind=None) -> list[dict]:
    where = "WHERE type = %s " if kind else ""
    return await service.db.fetchall(f"SELECT * FROM email_messages {where}ORDER BY id", (kind,) if kind else ())


async def settle_mail(service):
    for row in await emails(service):
        if row["status"] in ("queued", "sending", "failed"):
            await wait_status(service, row["id"], "sent", "suppressed", "dead")


async def replay(service, event_id: str) -> str:
    env = {"DATABASE_URL": service.settings.db.url,
           "VIBE_DATA_DIR": str(service.settings.data_dir), "STRIPE_WEBHOOK_SECRET": "whsec_x",
           "STRIPE_PRICE_TIERS": "price_000000000000000000000000=pro", "LOG_LEVEL": "warning"}
    code, out, err = await run_cli("events", "replay", event_id, env=env)
    assert code == 0, err
    return out


async def test_payment_receipt_is_sent_exactly_once_across_redelivery_and_replay(start_email):
    service = await start_email()
    await link_customer(service)
    invoice = fixture_event("invoice.payment_succeeded")
    await service.deliver(invoice, invoice)  # Stripe delivers twice
    await settle_mail(service)
    out = await replay(service, invoice["id"])  # an operator replays it
    assert f"{invoice['id']}  invoice.payment_succeeded  -> processed" in out
    await service.deliver(fixture_event("payment_intent.succeeded"))  # the same money, another event
    await settle_mail(service)
    receipts = await emails(service, "payment_confirmation")
    assert len(receipts) == 1 and receipts[0]["status"] == "sent"
    payment_id = await service.db.fetchval("SELECT id FROM payments")
    assert receipts[0]["idempotency_key"] == f"payment_confirmation:{payment_id}"
    subjects = [m["Subject"] for m in outbox(service)]
    assert subjects.count("Your receipt: $20.00 paid") == 1
    assert [m["To"] for m in outbox(service)] == ["learner@example.com"] * 2  # welcome + receipt
    assert "Welcome to Vibe Coding Bible, Lin!" in subjects


async def test_failed_payment_notice_and_referral_commission(start_email):
    service = await start_email()
    referrer = await add_profile(service.db, "referrer-1", email_address="ref@example.com")
    await link_customer(service)
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = 'learner-1'", (referrer,))
    failed = fixture_event("invoice.payment_failed")
    await service.deliver(failed)
    await service.deliver(fixture_event("invoice.payment_succeeded"))
    await settle_mail(service)
    [notice] = await emails(service, "payment_failed")
    assert notice["user_id"] == "learner-1" and notice["category"] == "transactional"
    [commission] = await emails(service, "referral_commission")
    assert commission["user_id"] == referrer and commission["status"] == "sent"
    assert '"amount": 400' in commission["data"]  # 20% of 2000


async def test_a_user_without_an_address_gets_no_mail_and_the_payment_still_commits(start_email):
    service = await start_email()
    await link_customer(service, email=None)
    await service.deliver(fixture_event("invoice.payment_succeeded"))
    assert (await service.event_row(fixture_event("invoice.payment_succeeded")["id"]))["status"] == "processed"
    assert await service.db.fetchval("SELECT COUNT(*) FROM payments") == 1
    assert await emails(service) == []


async def history(service, email_id) -> list[tuple]:
    rows = await service.db.fetchall(
        "SELECT status, detail FROM email_message_events WHERE email_id = %s ORDER BY id", (email_id,))
    return [(r["status"], r["detail"]) for r in rows]


async def test_hook_mail_honours_suppression_and_preferences_and_is_queued_once(start_email):
    """Mail a hook queues is written without a read (deferred into the transaction's next
    statement); the address's suppression and the category's preference still decide it."""
    service = await start_email()
    referrer = await add_profile(service.db, "referrer-2", email_address="Ref2@Example.com")
    await service.db.execute(
        "INSERT INTO email_preferences (user_id, category, subscribed, source, updated_at) "
        "VALUES (%s, 'engagement', FALSE, 'test', %s)", (referrer, time.time()))
    await service.db.execute(
        "INSERT INTO email_suppressions (email, reason, source, created_at) VALUES (%s, 'bounced', 'test', %s)",
        ("learner@example.com", time.time()))
    await link_customer(service)
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = 'learner-1'", (referrer,))
    invoice = fixture_event("invoice.payment_succeeded")
    await service.deliver(invoice)
    await replay(service, invoice["id"])
    [welcome] = await emails(service, "welcome")
    referral_code = await service.db.fetchval("SELECT referral_code FROM profiles WHERE id = 'learner-1'")
    assert f'"referral_code": "{referral_code}"' in welcome["data"]  # the template's prepare step ran
    [receipt] = await emails(service, "payment_confirmation")
    assert receipt["status"] == "suppressed" and receipt["next_attempt_at"] is None
    assert await history(service, receipt["id"]) == [("suppressed", "address suppressed: bounced")]
    [commission] = await emails(service, "referral_commission")
    assert commission["status"] == "suppressed" and commission["recipient"] == "ref2@example.com"
    assert await history(service, commission["id"]) == [("suppressed", "unsubscribed from engagement mail")]
    assert await history(service, welcome["id"]) == [("suppressed", "address suppressed: bounced")]


async def test_user_management_events_queue_mail_once_and_feed_the_weekly_report(start_email):
    service = await start_email()
    user = str(uuid.uuid4())
    token = tokens.user_token(user, email="ada@example.com")

    async def act(action, data):
        resp = await service.client.post("/functions/v1/user-management", json={"action": action, "data": data},
                                         headers=tokens.auth(token))
        assert resp.status == 200, await resp.text()

    await act("create_profile", {"display_name": "Ada Lovelace"})
    done = {"items": [{"resource_type": "workshop", "resource_id": "1", "status": "completed"}]}
    await act("sync_progress", done)
    await act("sync_progress", done)  # the same completion again: nothing new
    kinds = sorted(r["type"] for r in await emails(service))
    assert kinds == ["achievement", "welcome", "workshop_completion"]
    counts = await run_schedule(service.db, service.app[EMAIL_RENDERER].templates, service.settings)
    assert counts["weekly_progress"] == 1
    await settle_mail(service)
    mail = next(m for m in outbox(service) if m["Subject"].startswith("Your week"))
    assert mail["Subject"] == "Your week on Vibe Coding Bible: 1 workshop completed"
    text = mail.get_body(("plain",)).get_content()
    assert "Workshops completed: 1" in text and "First workshop" in text and "Hi Ada" in text


async def test_weekly_report_is_queued_once_per_iso_week(start_email):
    service = await start_email()
    templates = service.app[EMAIL_RENDERER].templates
    active = await add_profile(service.db, subscription_status="active")
    await add_profile(service.db)  # never active: no report
    monday = time.mktime((2026, 11, 23, 12, 0, 0, 0, 0, 0))
    results = await asyncio.gather(*(run_schedule(service.db, templates, service.settings, now=monday + i * 3600)
                                     for i in range(3)))
    assert sum(r["weekly_progress"] for r in results) == 1
    counts = await run_schedule(service.db, templates, service.settings, now=monday + 6 * 86400)  # same week
    assert counts["weekly_progress"] == 0
    counts = await run_schedule(service.db, templates, service.settings, now=monday + 7 * 86400)  # next week
    assert counts["weekly_progress"] == 1
    keys = [r["idempotency_key"] for r in await emails(service, "weekly_progress")]
    assert keys == [f"weekly_progress:{active}:{iso_week(monday)}", f"weekly_progress:{active}:2026-W49"]


async def test_expiring_reminder_before_a_cancelling_period_ends(start_email):
    service = await start_email(EMAIL_EXPIRING_DAYS="3")
    now = time.time()
    soon = await add_profile(service.db, subscription_status="active", cancel_at_period_end=True,
                             current_period_end=int(now + 2 * 86400), tier="pro")
    await add_profile(service.db, subscription_status="active", cancel_at_period_end=True,
                      current_period_end=int(now + 10 * 86400))  # too early
    await add_profile(service.db, subscription_status="active", cancel_at_period_end=False,
                      current_period_end=int(now + 86400))  # renews
    templates = service.app[EMAIL_RENDERER].templates
    assert (await run_schedule(service.db, templates, service.settings))["subscription_expiring"] == 1
    assert (await run_schedule(service.db, templates, service.settings))["subscription_expiring"] == 0
    [reminder] = await emails(service, "subscription_expiring")
    assert reminder["user_id"] == soon
    await settle_mail(service)
    assert any(m["Subject"].startswith("Your pro subscription ends on") for m in outbox(service))


async def test_scheduler_runs_in_the_service(start_service):
    service = await start_service(EMAIL_SCHEDULE_SECONDS="0.05", EMAIL_POLL_SECONDS="0.05")
    user = await add_profile(service.db, subscription_status="trialing")

    async def queued():
        return bool(await service.db.fetchval("SELECT COUNT(*) FROM email_messages WHERE user_id = %s", (user,)))

    await wait_until(queued)
    [row] = await emails(service, "weekly_progress")
    assert row["user_id"] == user and row["idempotency_key"].startswith(f"weekly_progress:{user}:")
    await wait_status(service, row["id"], "sent")  # the service's worker sent what its scheduler queued
    assert [m for m in outbox(service) if f"{user}@example.com" in str(m["To"])]
    await asyncio.sleep(0.3)  # several more passes of the scheduler: the week's mail is not queued again
    assert len(await emails(service, "weekly_progress")) == 1
