"""CONTRACT.md, email-notifications: the platform's bodies as it sends them, through HTTP with
real tokens, on both databases. Free-form `data`, `priority` and `send_immediately` (the real
worker sends in that order), the platform's template names, `user_id: "admin"` and the dispute
alert a signed Stripe event queues once, `notification_preferences` switching mail off, and the
original's answer."""

import json
import logging

import pytest
import tokens
from email_support import (  # noqa: F401
    QUEUE,
    add_profile,
    fake_resend,
    message,
    outbox,
    resend_env,
    start_email,
    wait_status,
)
from stripe_support import fixture, link_user

from vibe.billing.keys import DISPATCHER
from vibe.email.intake import MAX_FREE_DEPTH
from vibe.users.sessions import NOTIFICATION_KEYS
from vibe.web.times import to_seconds

SERVICE = tokens.auth(tokens.service_token())
ADMIN_EMAIL = "ops@vibe.example"
UM = "/functions/v1/user-management"


async def post(service, body, headers=SERVICE):
    resp = await service.client.post(QUEUE, json=body, headers=headers)
    return resp.status, await resp.json()


async def test_the_documented_welcome_call_is_queued_with_the_originals_answer(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    status, body = await post(service, {"user_id": user, "type": "welcome", "data": {"subscription_tier": "pro"}})
    assert status == 202, body
    assert {k: body[k] for k in ("success", "message", "priority")} == {
        "success": True, "message": "Email queued for processing", "priority": "normal"}
    assert body["status"] == "queued" and body["type"] == "welcome" and body["user_id"] == user and body["id"]
    # as the webhook sent it: keys the template does not declare are kept and given to it (escaped);
    # one it does not use is shown nowhere
    status, second = await post(service, {"user_id": user, "type": "welcome", "data": {
        "subscription_tier": "<b>pro</b>", "features_unlocked": ["all_workshops"], "campaign": "zz-campaign-7"}})
    assert status == 202, second
    sent = await wait_status(service, second["id"], "sent")
    assert sent["data"]["features_unlocked"] == ["all_workshops"] and sent["data"]["campaign"] == "zz-campaign-7"
    assert sent["priority"] == "normal"
    assert all(isinstance(to_seconds(sent[k]), float) for k in ("created_at", "updated_at", "sent_at"))
    assert all(isinstance(h["at"], str) and to_seconds(h["at"]) for h in sent["history"])
    await wait_status(service, body["id"], "sent")
    [_, mail] = outbox(service)
    html = mail.get_body(("html",)).get_content()
    assert "zz-campaign-7" not in mail.as_string()
    assert "&lt;b&gt;pro&lt;/b&gt;" in html and "<b>pro</b>" not in html


@pytest.mark.parametrize("data, field", [
    ({"currency": "usd", "note": "kept"}, "data.amount"),  # required keys are still checked
    ({"amount": "29", "currency": "usd"}, "data.amount"),  # declared keys keep their validation
    ({"amount": 2900, "currency": "usd", "deep": json.loads("[" * (MAX_FREE_DEPTH + 1) + "]" * (MAX_FREE_DEPTH + 1))},
     "data.deep"),
    ({"amount": 2900, "currency": "usd", "note": "a\x00b"}, "data.note"),
    ({"amount": 2900, "currency": "usd", "\ud800": 1}, "data.\ud800"),
    ({"amount": 2900, "currency": "usd", "note": {"k": "\udfff"}}, "data.note"),
], ids=["required-missing", "declared-wrong-kind", "too-deep", "nul", "surrogate-key", "surrogate-nested"])
async def test_free_form_data_keeps_the_checks_that_matter(start_email, data, field):
    service = await start_email()
    user = await add_profile(service.db)
    status, body = await post(service, {"user_id": user, "type": "payment_confirmation", "data": data})
    assert status == 400 and body["error"]["code"] == "invalid_email_data", body
    assert any(d.startswith(field + ":") for d in body["error"]["details"]), body
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_messages") == 0


async def test_free_form_data_nested_to_the_limit_is_kept(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    nested = json.loads("[" * MAX_FREE_DEPTH + "]" * MAX_FREE_DEPTH)
    status, body = await post(service, {"user_id": user, "type": "payment_confirmation", "data": {
        "amount": 2900, "currency": "usd", "nested": nested, "plan": {"name": "<b>Pro</b>", "seats": 1.5}}})
    assert status == 202, body
    assert (await message(service, body["id"]))["data"]["nested"] == nested


async def test_urgent_and_send_immediately_are_sent_before_everything_queued(start_email, fake_resend):
    queueing = await start_email(VIBE_EMAIL_WORKER="false")
    user = await add_profile(queueing.db)
    asked = [({"priority": "low"}, "low"), ({}, "normal"), ({"priority": "high"}, "high"),
             ({"priority": "normal"}, "normal"), ({"priority": "urgent"}, "urgent"),
             ({"send_immediately": True}, "urgent")]
    ids = []
    for extra, answered in asked:
        status, body = await post(queueing, {"user_id": user, "type": "welcome", "data": {}, **extra})
        assert status == 202 and body["priority"] == answered, body
        ids.append(body["id"])
        assert (await message(queueing, body["id"]))["priority"] == answered
    # the real worker of another instance, one send at a time, takes the queue as it stands
    sending = await start_email(EMAIL_CONCURRENCY="1", **resend_env(fake_resend))
    for email_id in ids:
        await wait_status(sending, email_id, "sent")
    order = [next(int(t["value"]) for t in r["body"]["tags"] if t["name"] == "email_id") for r in fake_resend.requests]
    low, normal, high, normal2, urgent, immediately = ids
    assert order == [urgent, immediately, high, normal, normal2, low]


async def test_a_bad_priority_is_400(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    status, body = await post(service, {"user_id": user, "type": "welcome", "data": {}, "priority": "asap"})
    assert status == 400 and body["error"]["code"] == "invalid_request"
    assert any(d.startswith("priority:") for d in body["error"]["details"]), body


PLATFORM_CALLS = {  # each of the nine names the platform uses, with data as it sends it
    "welcome": {"subscription_tier": "pro", "features_unlocked": ["all_workshops"]},
    "payment_confirmation": {"amount": 4900, "currency": "eur", "subscription_tier": "pro"},
    "payment_failed": {"amount": 4900, "currency": "eur", "attempt_count": 2},
    "workshop_completed": {"workshop_id": "3", "workshop_title": "Agents", "score": 92},
    "achievement_unlocked": {"achievement": {"key": "first_workshop", "name": "First workshop"}, "points": 10},
    "subscription_expiring": {"period_end": "2026-12-24T00:00:00Z", "tier": "pro", "days_left": 3},
    "weekly_progress": {"workshops_completed": 2, "streak_days": 5},
    "referral_commission": {"amount": 980, "currency": "eur", "referred_email": "friend@example.com"},
    "dispute_alert": {"amount": 4900, "currency": "eur", "reason": "fraudulent", "dispute_id": "dp_1",
                      "charge_id": "ch_1", "customer_id": "cus_1"},
}
STORED_AS = {"workshop_completed": "workshop_completion", "achievement_unlocked": "achievement"}


async def test_every_template_name_the_platform_uses_is_accepted(start_email):
    service = await start_email(ADMIN_EMAIL=ADMIN_EMAIL)
    user = await add_profile(service.db)
    for name, data in PLATFORM_CALLS.items():
        to = "admin" if name == "dispute_alert" else user
        status, body = await post(service, {"user_id": to, "type": name, "data": data})
        assert status == 202, (name, body)
        assert body["type"] == STORED_AS.get(name, name)  # an alias resolves at the API
        assert (await message(service, body["id"]))["type"] == STORED_AS.get(name, name)
    status, body = await post(service, {"user_id": user, "type": "workshop_done", "data": {}})
    assert status == 400 and body["error"]["code"] == "unknown_email_type"
    assert body["error"]["details"]["aliases"] == STORED_AS


async def test_user_id_admin_addresses_admin_email(start_email):
    service = await start_email(ADMIN_EMAIL="Ops@Vibe.Example")
    body = {"user_id": "admin", "type": "dispute_alert", "data": PLATFORM_CALLS["dispute_alert"]}
    status, queued = await post(service, body)
    assert status == 202 and queued["user_id"] == "admin", queued
    sent = await wait_status(service, queued["id"], "sent")
    assert sent["recipient"] == ADMIN_EMAIL
    [mail] = outbox(service)
    assert mail["To"] == ADMIN_EMAIL and "dp_1" in mail.get_body(("plain",)).get_content()
    admin_user = tokens.auth(tokens.admin_token())
    status, again = await post(service, {**body, "data": {**body["data"], "dispute_id": "dp_2"}}, admin_user)
    assert status == 202, again
    learner = tokens.auth(tokens.user_token("admin"))  # even a token whose subject is "admin"
    assert (await post(service, body, learner))[0] == 403
    assert (await service.client.get(f"{QUEUE}/{queued['id']}", headers=learner)).status == 404


async def test_admin_without_admin_email_is_a_clear_409(start_email):
    service = await start_email()
    status, body = await post(service, {"user_id": "admin", "type": "dispute_alert",
                                        "data": PLATFORM_CALLS["dispute_alert"]})
    assert status == 409 and body["error"]["code"] == "admin_email_not_configured", body
    assert "ADMIN_EMAIL" in body["error"]["message"]
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_messages") == 0


DISPUTE = "dp_000000000000000000000000"


def dispute_event(created, kind="charge.dispute.created", status="warning_needs_response"):
    event = fixture("charge.dispute.created", created=created, amount=2000, status=status)
    event["type"] = kind
    return event


async def test_a_signed_dispute_alerts_the_admin_once(start_email):
    service = await start_email(ADMIN_EMAIL=ADMIN_EMAIL)
    user = await link_user(service)
    await service.deliver(fixture("invoice.payment_succeeded", created=1_700_000_100))
    # the learner switched every kind of mail off: the administrator's alert is not theirs
    await switch_off(service, user, **dict.fromkeys(NOTIFICATION_KEYS, False))
    created = dispute_event(1_700_000_200)
    await service.deliver(created)
    await service.deliver(created)  # redelivered
    await service.app[DISPATCHER].process_ids([created["id"]])  # replayed
    await service.deliver(dispute_event(1_700_000_300, "charge.dispute.closed", "lost"))  # the same dispute
    rows = await service.db.fetchall("SELECT * FROM email_messages WHERE type = 'dispute_alert'")
    assert len(rows) == 1 and rows[0]["user_id"] == "admin" and rows[0]["recipient"] == ADMIN_EMAIL
    assert rows[0]["idempotency_key"] == f"dispute_alert:{DISPUTE}"
    sent = await wait_status(service, rows[0]["id"], "sent")
    assert sent["priority"] == "high"
    assert sent["data"] == {"amount": 2000, "currency": "usd", "reason": "fraudulent", "dispute_id": DISPUTE,
                            "charge_id": "ch_000000000000000000000000", "customer_id": "cus_00000000000000",
                            "user_id": user, "user_email": "learner@example.com", "evidence_due_by": 1649116799,
                            "dashboard_url": f"https://dashboard.stripe.com/test/disputes/{DISPUTE}"}
    [alert] = [m for m in outbox(service) if m["To"] == ADMIN_EMAIL]
    assert DISPUTE in alert.get_body(("plain",)).get_content()


async def test_a_dispute_without_admin_email_is_recorded_and_logged(start_email, caplog):
    service = await start_email()
    with caplog.at_level(logging.WARNING, logger="vibe.email.queue"):
        await service.deliver(dispute_event(1_700_000_200))
    assert (await service.event_row((await service.db.fetchval("SELECT id FROM stripe_events"))))["status"] == "processed"
    assert await service.db.fetchval("SELECT COUNT(*) FROM disputes") == 1
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_messages") == 0
    assert any("dispute_alert" in r.getMessage() and "ADMIN_EMAIL" in r.getMessage() for r in caplog.records)


async def switch_off(service, user, **switches):
    resp = await service.client.post(UM, json={"action": "update_profile", "data": {"notification_preferences": switches}},
                                     headers=tokens.auth(tokens.user_token(user)))
    assert resp.status == 200, await resp.text()


async def test_notification_preferences_switch_mail_off(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    await switch_off(service, user, payment_emails=False, achievement_emails=False)
    reason = "switched off in notification_preferences (payment_emails)"
    status, body = await post(service, {"user_id": user, "type": "payment_confirmation",
                                        "data": {"amount": 4900, "currency": "eur"}})
    assert status == 200 and body["status"] == "suppressed" and body["success"] is True, body
    assert body["reason"] == reason and body["message"] == f"Email not sent: {reason}"
    assert (await message(service, body["id"]))["history"][0]["detail"] == reason
    status, body = await post(service, {"user_id": user, "type": "workshop_completed", "data": {"workshop_id": "1"}})
    assert status == 200 and body["reason"].endswith("(achievement_emails)"), body
    status, body = await post(service, {"user_id": user, "type": "welcome", "data": {}})
    assert status == 202 and body["status"] == "queued"  # a kind left on
    await switch_off(service, user, payment_emails=True)  # switched on again
    status, body = await post(service, {"user_id": user, "type": "payment_failed",
                                        "data": {"amount": 4900, "currency": "eur"}})
    assert status == 202 and body["status"] == "queued", body


async def test_a_stripe_receipt_respects_payment_emails(start_email):
    """The hook path (`enqueue_for`, SQL on each database) reads the same switch."""
    service = await start_email()
    user = await link_user(service)
    await switch_off(service, user, payment_emails=False)
    await service.deliver(fixture("invoice.payment_succeeded", created=1_700_000_100))
    [row] = await service.db.fetchall("SELECT id, status FROM email_messages WHERE type = 'payment_confirmation'")
    assert row["status"] == "suppressed"
    history = (await message(service, row["id"]))["history"]
    assert [(h["status"], h["detail"]) for h in history] == [
        ("suppressed", "switched off in notification_preferences (payment_emails)")]
