"""Delivery webhooks (Svix-signed), the suppression list, and one-click unsubscribe."""

import time
import urllib.parse

from email_support import (  # noqa: F401
    QUEUE,
    SVIX_SECRET,
    add_profile,
    fake_resend,
    json_body,
    message,
    outbox,
    queue,
    resend_env,
    start_email,
    svix_headers,
    wait_status,
)

from vibe.email.keys import EMAIL_UNSUBSCRIBE

EVENTS = f"{QUEUE}/events"
UNSUBSCRIBE = f"{QUEUE}/unsubscribe"


def resend_event(kind: str, provider_id: str, to: str, **data) -> dict:
    return {"type": kind, "created_at": "2026-11-26T10:00:00.000Z",
            "data": {"email_id": provider_id, "from": "hello@vibe.test", "to": [to], "subject": "x", **data}}


async def post_event(service, event: dict, **kw):
    body = json_body(event)
    return await service.client.post(EVENTS, data=body, headers=svix_headers(body, **kw))


async def sent_via_resend(start_email, fake_resend, kind="welcome", data=None):
    service = await start_email(**resend_env(fake_resend), EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    user = await add_profile(service.db)
    email_id = (await (await queue(service, user, kind, data)).json())["id"]
    row = await wait_status(service, email_id, "sent")
    return service, user, row


async def test_svix_signatures_good_bad_stale_and_missing(start_email, fake_resend):
    service, user, row = await sent_via_resend(start_email, fake_resend)
    event = resend_event("email.delivered", row["provider_id"], row["recipient"])
    body = json_body(event)
    cases = [
        ({}, "missing_signature"),
        ({**svix_headers(body), "svix-timestamp": "yesterday"}, "malformed_signature"),
        (svix_headers(body, secret="whsec_" + "QUJD" * 8), "invalid_signature"),
        (svix_headers(body + b" "), "invalid_signature"),
        (svix_headers(body, timestamp=int(time.time()) - 3600), "timestamp_out_of_tolerance"),
        (svix_headers(body, timestamp=int(time.time()) + 3600), "timestamp_out_of_tolerance"),
    ]
    for headers, code in cases:
        resp = await service.client.post(EVENTS, data=body, headers=headers)
        assert resp.status == 400, code
        assert (await resp.json())["error"]["code"] == code
    assert (await message(service, row["id"]))["status"] == "sent"
    resp = await post_event(service, event)
    assert resp.status == 200
    assert await resp.json() == {"received": True, "duplicate": False, "matched": True, "email_id": row["id"],
                                 "status": "delivered"}
    assert (await message(service, row["id"]))["status"] == "delivered"


async def test_without_a_secret_delivery_events_are_refused(start_email):
    service = await start_email()
    body = json_body(resend_event("email.delivered", "x", "a@example.com"))
    resp = await service.client.post(EVENTS, data=body, headers=svix_headers(body))
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "webhook_not_configured"


async def test_hard_bounce_suppresses_the_address_and_redelivery_counts_once(start_email, fake_resend):
    service, user, row = await sent_via_resend(start_email, fake_resend)
    event = resend_event("email.bounced", row["provider_id"], row["recipient"],
                         bounce={"type": "Permanent", "subType": "General", "message": "mailbox does not exist"})
    first = await post_event(service, event, msg_id="msg_bounce_1")
    again = await post_event(service, event, msg_id="msg_bounce_1")
    assert (await first.json())["status"] == "bounced" and (await again.json())["duplicate"] is True
    shown = await message(service, row["id"])
    assert shown["status"] == "bounced" and shown["history"][-1]["detail"] == "mailbox does not exist"
    assert [h["status"] for h in shown["history"]].count("bounced") == 1
    reason = await service.db.fetchval("SELECT reason FROM email_suppressions WHERE email = %s", (row["recipient"],))
    assert reason == "hard bounce"
    resp = await queue(service, user, "payment_confirmation", {"amount": 1, "currency": "usd"})
    assert resp.status == 200 and (await resp.json())["status"] == "suppressed"
    # A later "delivered" does not move a bounced message backwards.
    await post_event(service, resend_event("email.delivered", row["provider_id"], row["recipient"]))
    assert (await message(service, row["id"]))["status"] == "bounced"


async def test_soft_bounce_and_opens_are_history_only(start_email, fake_resend):
    service, user, row = await sent_via_resend(start_email, fake_resend)
    await post_event(service, resend_event("email.bounced", row["provider_id"], row["recipient"],
                                           bounce={"type": "Transient", "message": "mailbox full"}))
    await post_event(service, resend_event("email.opened", row["provider_id"], row["recipient"]))
    shown = await message(service, row["id"])
    assert shown["status"] == "sent" and [h["status"] for h in shown["history"]][-2:] == ["bounced", "opened"]
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_suppressions") == 0


async def test_complaint_suppresses_even_an_unknown_message(start_email, fake_resend):
    service, user, row = await sent_via_resend(start_email, fake_resend)
    resp = await post_event(service, resend_event("email.complained", "not-ours", "angry@example.com"))
    assert await resp.json() == {"received": True, "duplicate": False, "matched": False}
    resp = await post_event(service, resend_event("email.complained", row["provider_id"], row["recipient"]))
    assert (await resp.json())["status"] == "complained"
    rows = await service.db.fetchall("SELECT email, reason FROM email_suppressions ORDER BY email")
    assert rows == [{"email": "angry@example.com", "reason": "complaint"},
                    {"email": row["recipient"], "reason": "complaint"}]


async def test_bad_event_bodies_are_400(start_email):
    service = await start_email(EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    for body in (b"not json", b"[]", b'{"type": "email.sent"}'):
        resp = await service.client.post(EVENTS, data=body, headers=svix_headers(body))
        assert resp.status == 400 and (await resp.json())["error"]["code"] in ("invalid_json", "invalid_event")


def unsubscribe_url(service, user: str) -> str:
    url = service.app[EMAIL_UNSUBSCRIBE].url(user, "engagement")
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_one_click_unsubscribe_from_the_header_link(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    email_id = (await (await queue(service, user, "workshop_completion", {"workshop_id": "w1"})).json())["id"]
    await wait_status(service, email_id, "sent")
    [mail] = outbox(service)
    link = mail["List-Unsubscribe"].split(">")[0].lstrip("<")
    parts = urllib.parse.urlsplit(link)
    resp = await service.client.post(f"{parts.path}?{parts.query}", data="List-Unsubscribe=One-Click",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200 and await resp.json() == {"unsubscribed": True, "category": "engagement"}
    resp = await queue(service, user, "weekly_progress")
    assert resp.status == 200 and (await resp.json())["status"] == "suppressed"
    resp = await queue(service, user, "payment_confirmation", {"amount": 100, "currency": "usd"})
    assert resp.status == 202  # transactional mail is never blocked by an unsubscribe


async def test_unsubscribe_page_shows_and_saves_choices(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    url = unsubscribe_url(service, user)
    resp = await service.client.get(url, headers={"Accept": "text/html"})
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "Email preferences" in page and 'name="engagement" checked' in page
    resp = await service.client.post(url, data={"action": "unsubscribe"}, headers={"Accept": "text/html"})
    assert resp.status == 200 and "Your choices are saved." in await resp.text()
    assert 'name="engagement" checked' not in await (await service.client.get(url)).text()
    resp = await service.client.post(url, data={"action": "save", "engagement": "on"})
    assert await resp.json() == {"preferences": {"engagement": True}}
    resp = await service.client.post(url, data={"action": "delete-everything"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_form"


async def test_bad_and_expired_tokens_are_refused(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    links = service.app[EMAIL_UNSUBSCRIBE]
    good = links.token(user, "engagement")
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    expired = links.token(user, "engagement", now=time.time() - links.ttl - 10)
    for token, code in (("", "invalid_token"), ("abc", "invalid_token"), (forged, "invalid_token"),
                        (links.token(user, "transactional"), "invalid_token"), (expired, "token_expired")):
        resp = await service.client.post(f"{UNSUBSCRIBE}?token={urllib.parse.quote(token)}",
                                         data="List-Unsubscribe=One-Click")
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code, token
    resp = await service.client.get(f"{UNSUBSCRIBE}?token={urllib.parse.quote(expired)}",
                                    headers={"Accept": "text/html"})
    assert resp.status == 400 and "has expired" in await resp.text()
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_preferences") == 0
