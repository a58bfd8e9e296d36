"""Email and bad input (issue 15): addresses that cannot be a recipient, sends that fail in ways
no provider answers, Svix bodies and headers, template data nested deep, broken unsubscribe
forms, and links in template data. Each is a 4xx or a message that ends (`suppressed`, `dead`),
never a 500 or a message left `sending`."""

import asyncio
import json
import logging
import urllib.parse
import uuid

import pytest
import tokens
from email_support import (  # noqa: F401
    QUEUE,
    SVIX_SECRET,
    add_profile,
    json_body,
    outbox,
    queue,
    start_email,
    svix_headers,
    wait_status,
)

from vibe.email.keys import EMAIL_UNSUBSCRIBE

EVENTS = f"{QUEUE}/events"
USERS = "/functions/v1/user-management"

BAD_ADDRESSES = [
    "ada@example.com\r\nBcc: spy@evil.test",  # header injection from a token's email claim
    "ada\r\n@example.com",
    "ada\n@example.com",
    "ada@exam ple.com",
    "ada.example.com",
    "ada@",
    "Ada <ada@example.com>",
    "ada@example.com, spy@evil.test",
    "a" * 250 + "@example.com",
]


async def history(service, email_id: int) -> list[tuple[str, str | None]]:
    rows = await service.db.fetchall(
        "SELECT status, detail FROM email_message_events WHERE email_id = %s ORDER BY id", (email_id,))
    return [(r["status"], r["detail"]) for r in rows]


async def messages(service) -> list[dict]:
    return await service.db.fetchall("SELECT * FROM email_messages ORDER BY id")


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", BAD_ADDRESSES)
async def test_the_queue_refuses_a_recipient_that_is_not_one_plain_address(start_email, address):
    service = await start_email()
    user = await add_profile(service.db, email_address=address)
    resp = await queue(service, user, "welcome")
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_email_address" and "invalid address" in error["message"]
    assert await messages(service) == []
    good = await add_profile(service.db, email_address="grace@example.com")
    assert (await queue(service, good, "welcome")).status == 202  # the rule refuses only what it should


async def test_mail_a_hook_queues_for_a_bad_address_is_suppressed_saying_why(start_email):
    """The hook path reads nothing (the address is checked in SQL): a learner whose stored address
    holds CR/LF completes a workshop; the change commits, and its mails are `suppressed`."""
    service = await start_email()
    user = str(uuid.uuid4())
    await add_profile(service.db, user, email_address="ada@example.com\r\nbcc: spy@evil.test")
    done = {"items": [{"resource_type": "workshop", "resource_id": "1", "status": "completed"}]}
    resp = await service.client.post(USERS, json={"action": "sync_progress", "data": done},
                                     headers=tokens.auth(tokens.user_token(user)))
    assert resp.status == 200, await resp.text()
    rows = await messages(service)
    assert sorted(r["type"] for r in rows) == ["achievement", "workshop_completion"]
    for row in rows:
        assert row["status"] == "suppressed" and row["next_attempt_at"] is None
        [(status, detail)] = await history(service, row["id"])
        assert status == "suppressed" and detail.startswith("invalid address")
    await asyncio.sleep(0.3)  # the worker had its chances: nothing was claimed or written
    assert outbox(service) == []
    assert {r["status"] for r in await messages(service)} == {"suppressed"}
    good = str(uuid.uuid4())  # and the same hook for a good address still queues and sends
    await add_profile(service.db, good, email_address="grace@example.com")
    resp = await service.client.post(USERS, json={"action": "sync_progress", "data": done},
                                     headers=tokens.auth(tokens.user_token(good)))
    assert resp.status == 200
    sent = [r for r in await messages(service) if r["user_id"] == good]
    assert len(sent) == 2
    for row in sent:
        await wait_status(service, row["id"], "sent")


async def test_a_token_email_claim_with_cr_lf_never_leaves_a_message_sending(start_email):
    """Through user management's create_profile: however that side treats the claim (refused, or
    stored), the welcome mail is never queued to stick: it is `suppressed` naming the reason."""
    service = await start_email(EMAIL_SENDING_LEASE_SECONDS="1")
    user = str(uuid.uuid4())
    token = tokens.user_token(user, email="ada@example.com\r\nBcc: spy@evil.test")
    resp = await service.client.post(USERS, json={"action": "create_profile", "data": {}},
                                      headers=tokens.auth(token))
    assert resp.status < 500, await resp.text()
    await asyncio.sleep(1.5)  # longer than a lease: a stuck message would have been claimed again
    rows = await messages(service)
    assert all(r["status"] == "suppressed" for r in rows), rows
    for row in rows:
        assert (await history(service, row["id"]))[-1][1].startswith("invalid address")
    assert outbox(service) == []


async def test_a_message_queued_with_a_bad_address_before_the_check_goes_dead_at_once(start_email):
    service = await start_email(VIBE_EMAIL_WORKER="false")
    user = await add_profile(service.db, email_address="grace@example.com")
    email_id = (await (await queue(service, user, "welcome")).json())["id"]
    await service.db.execute("UPDATE email_messages SET recipient = %s WHERE id = %s",
                             ("grace@example.com\r\nbcc: spy@evil.test", email_id))
    await service.client.close()
    service = await start_email(DATABASE_URL=service.settings.db.url, VIBE_DATA_DIR=str(service.settings.data_dir))
    row = await wait_status(service, email_id, "dead")
    assert row["attempts"] == 1 and row["last_error"].startswith("recipient: invalid address")
    assert outbox(service) == []


async def test_a_send_error_no_provider_answered_counts_as_an_attempt_then_dead(start_email, caplog):
    """A non-ASCII address is accepted, but the outbox cannot write it in an ASCII header: the
    `UnicodeEncodeError` is an attempt like any failure (retried with backoff, then `dead`), not a
    task crash that left the message `sending` to be claimed again at every lease."""
    service = await start_email(EMAIL_MAX_ATTEMPTS="3", EMAIL_RETRY_BASE_SECONDS="0.05",
                                EMAIL_RETRY_MAX_SECONDS="0.1", EMAIL_SENDING_LEASE_SECONDS="1")
    user = await add_profile(service.db, email_address="josé@example.com")
    other = await add_profile(service.db, email_address="grace@example.com")
    with caplog.at_level(logging.WARNING, logger="vibe.email"):
        bad = (await (await queue(service, user, "welcome")).json())["id"]
        good = (await (await queue(service, other, "welcome")).json())["id"]
        row = await wait_status(service, bad, "dead", timeout=8)
        await wait_status(service, good, "sent")
    assert row["attempts"] == 3 and "UnicodeEncodeError" in row["last_error"]
    assert [h["status"] for h in row["history"]] == ["queued", "sending", "failed", "sending", "failed", "sending", "dead"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "dead after 3 attempt(s)" in tracebacks[0].getMessage()
    assert not any("a send task failed" in r.getMessage() for r in caplog.records)
    assert [m["To"] for m in outbox(service)] == ["grace@example.com"]


# --- delivery webhooks (Svix) --------------------------------------------------------------


def resend_event(kind: str, **data) -> dict:
    return {"type": kind, "created_at": "2026-11-26T10:00:00.000Z",
            "data": {"email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "to": ["ada@example.com"], **data}}


async def post_signed(service, body: bytes, **kw):
    return await service.client.post(EVENTS, data=body, headers=svix_headers(body, **kw))


async def test_a_signed_event_nested_10000_deep_is_400(start_email):
    service = await start_email(EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    deep = b'{"type": "email.opened", "data": {"email_id": "x", "tags": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    resp = await post_signed(service, deep)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "too_deep"
    shallow = {"type": "email.opened", "data": {"email_id": "x", "tags": [[[[1]]]]}}
    resp = await post_signed(service, json_body(shallow))
    assert resp.status == 200 and await resp.json() == {"received": True, "duplicate": False, "matched": False}


@pytest.mark.parametrize("event", [
    resend_event("email.delivered", email_id="re_\x00"),
    resend_event("email.delivered", email_id="re_\ud800"),
    resend_event("email.bounced", to=["ada\x00@example.com"]),
    resend_event("email.bounced", to=["\udfffada@example.com"]),
    resend_event("email.complained", to=["ada@example.com", "\ud83d"]),
    resend_event("email.bounced", bounce={"type": "Permanent", "message": "\x00"}),
    resend_event("email.bounced", bounce={"type": "Permanent", "message": 550}),
    {"type": "email.\x00sent", "data": {"email_id": "x"}},
    {"type": "email.sent\udc80", "data": {"email_id": "x"}},
], ids=["email_id-nul", "email_id-surrogate", "to-nul", "to-surrogate", "to-second", "bounce-nul",
        "bounce-number", "type-nul", "type-surrogate"])
async def test_signed_events_with_unstorable_text_are_400(start_email, event):
    service = await start_email(EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    resp = await post_signed(service, json_body(event))
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_event"
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_webhook_events") == 0
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_suppressions") == 0


async def test_a_bounce_names_a_bad_address_it_is_not_suppressed(start_email):
    service = await start_email(EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    event = resend_event("email.bounced", to=["ada@example.com", "ada\r\n@example.com"])
    resp = await post_signed(service, json_body(event))
    assert resp.status == 200, await resp.text()
    assert await service.db.fetchall("SELECT email FROM email_suppressions") == [{"email": "ada@example.com"}]


async def test_svix_headers_that_are_not_utf8_are_400(start_email):
    """Header bytes that are not UTF-8 reach the handler as lone surrogates; signing them was a 500."""
    service = await start_email(EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    body = json_body(resend_event("email.delivered"))
    good = svix_headers(body)
    server = service.client.server
    for name in ("svix-id", "svix-signature"):
        headers = {**good, name: None}
        lines = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items() if v is not None)
        lines += name.encode() + b": msg_\xff\xfe\r\n"
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" + lines
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer[:300]
        assert json.loads(payload)["error"]["code"] == "malformed_signature"
    resp = await service.client.post(EVENTS, data=body, headers=good)
    assert resp.status == 200


# --- queue requests ------------------------------------------------------------------------


async def test_template_data_nested_500_deep_is_400_without_a_traceback(start_email, caplog):
    service = await start_email()
    user = await add_profile(service.db)
    nested: list = []
    for _ in range(500):
        nested = [nested]
    with caplog.at_level(logging.DEBUG):
        resp = await queue(service, user, "weekly_progress", {"highlights": nested})
        deep = await service.client.post(QUEUE, data=b'{"user_id": "u", "type": "welcome", "data": '
                                         + b"[" * 20_000 + b"]" * 20_000 + b"}",
                                         headers={**tokens.auth(tokens.service_token()),
                                                  "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "too_deep"
    assert deep.status == 400 and (await deep.json())["error"]["code"] == "too_deep"
    assert not [r for r in caplog.records if r.exc_info]
    assert await messages(service) == []
    resp = await queue(service, user, "weekly_progress", {"highlights": ["Prompting 101"]})
    assert resp.status == 202


# --- unsubscribe ---------------------------------------------------------------------------

PART = b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n"  # a part's first header


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n"),
    ("multipart/form-data", b"List-Unsubscribe=One-Click"),
    ("multipart/form-data; boundary=xyz", b"garbage"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken header\r\n\r\nv\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=xyz", PART + b"Content-Transfer-Encoding: bogus\r\n\r\nv\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=xyz", PART + b"Content-Type: text/plain; charset=nope\r\n\r\nv\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=xyz",
     PART + b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=" + "x" * 100, b"--x--"),
    ("application/x-www-form-urlencoded; charset=nope", b"List-Unsubscribe=One-Click"),
], ids=["unterminated", "no-boundary", "no-start", "bad-part-header", "no-name", "bad-transfer-encoding",
        "unknown-charset", "not-utf8", "long-boundary", "urlencoded-unknown-charset"])
async def test_an_unsubscribe_post_with_a_broken_form_is_400(start_email, content_type, body):
    service = await start_email()
    user = await add_profile(service.db)
    parts = urllib.parse.urlsplit(service.app[EMAIL_UNSUBSCRIBE].url(user, "engagement"))
    url = f"{parts.path}?{parts.query}"
    resp = await service.client.post(url, data=body, headers={"Content-Type": content_type})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_form"
    page = await service.client.post(url, data=body, headers={"Content-Type": content_type, "Accept": "text/html"})
    assert page.status == 400 and "cannot be read" in await page.text()
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_preferences") == 0
    resp = await service.client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert resp.status == 200 and (await resp.json())["unsubscribed"] is True


# --- links in template data ----------------------------------------------------------------

REFUSED_LINKS = [
    ("payment_confirmation", "invoice_url", "javascript:alert(document.cookie)"),
    ("payment_confirmation", "invoice_url", "JavaScript:alert(1)"),
    ("payment_confirmation", "invoice_url", "data:text/html,<script>alert(1)</script>"),
    ("payment_confirmation", "invoice_url", "https://invoice.stripe.com@evil.test/i/1"),
    ("payment_confirmation", "invoice_url", "https://invoice.stripe.com\\@evil.test/"),
    ("payment_confirmation", "invoice_url", "//evil.test/i/1"),
    ("payment_confirmation", "invoice_url", " https://invoice.stripe.com/i/1"),
    ("payment_confirmation", "invoice_url", "http://invoice.stripe.com/i/1"),  # https only outside development
    ("payment_failed", "update_url", "javascript:alert(1)"),
    ("payment_failed", "update_url", "https://billing.stripe.com:99999/"),
    ("welcome", "start_path", "@evil.test/workshops"),
    ("welcome", "start_path", "//evil.test"),
    ("welcome", "start_path", "/\\evil.test"),
    ("welcome", "start_path", "javascript:alert(1)"),
]


def link_data(kind: str, field: str, value: str) -> dict:
    money = {"amount": 2900, "currency": "usd"} if kind != "welcome" else {}
    return {**money, field: value}


@pytest.mark.parametrize("kind, field, value", REFUSED_LINKS)
async def test_links_in_template_data_must_be_https_urls_or_app_paths(start_email, kind, field, value):
    service = await start_email(VIBE_ENV="test")
    user = await add_profile(service.db)
    resp = await queue(service, user, kind, link_data(kind, field, value))
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_email_data"
    assert any(d.startswith(f"data.{field}: ") for d in error["details"]), error
    assert await messages(service) == []


async def test_good_links_become_links_and_http_only_in_development(start_email):
    service = await start_email(VIBE_ENV="test")
    user = await add_profile(service.db)
    invoice = "https://invoice.stripe.com/i/acct_1/test_YWNjdF8x?s=ap"
    for kind, data in (("payment_confirmation", {"amount": 2900, "currency": "usd", "invoice_url": invoice}),
                       ("welcome", {"start_path": "/workshops/intro?from=mail#top"})):
        resp = await queue(service, user, kind, data)
        assert resp.status == 202, await resp.text()
        await wait_status(service, (await resp.json())["id"], "sent")
    html = {m["Subject"]: m.get_body(("html",)).get_content() for m in outbox(service)}
    receipt = next(v for k, v in html.items() if "receipt" in k.lower())
    welcome = next(v for k, v in html.items() if "welcome" in k.lower())
    assert 'href="https://invoice.stripe.com/i/acct_1/test_YWNjdF8x?s=ap"' in receipt
    assert f'href="{service.settings.public_url}/workshops/intro?from=mail#top"' in welcome
    await service.client.close()

    dev = await start_email(VIBE_ENV="development")
    user = await add_profile(dev.db)
    resp = await queue(dev, user, "payment_confirmation",
                       {"amount": 2900, "currency": "usd", "invoice_url": "http://localhost:8000/i/1"})
    assert resp.status == 202, await resp.text()
    resp = await queue(dev, user, "payment_confirmation",
                       {"amount": 2900, "currency": "usd", "invoice_url": "javascript:alert(1)"})
    assert resp.status == 400


async def test_a_link_stored_before_the_check_renders_as_no_link(start_email):
    service = await start_email(VIBE_ENV="test", VIBE_EMAIL_WORKER="false")
    user = await add_profile(service.db)
    resp = await queue(service, user, "payment_confirmation", {"amount": 2900, "currency": "usd"})
    email_id = (await resp.json())["id"]
    data = {"amount": 2900, "currency": "usd", "invoice_url": "javascript:alert(1)"}
    await service.db.execute("UPDATE email_messages SET data = %s WHERE id = %s", (json.dumps(data), email_id))
    await service.client.close()
    service = await start_email(VIBE_ENV="test", DATABASE_URL=service.settings.db.url,
                                VIBE_DATA_DIR=str(service.settings.data_dir))
    await wait_status(service, email_id, "sent")
    [mail] = outbox(service)
    html, text = mail.get_body(("html",)).get_content(), mail.get_body(("plain",)).get_content()
    assert "javascript:" not in html and "javascript:" not in text
    assert "View your invoice" not in html
