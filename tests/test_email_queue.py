"""POST /functions/v1/email-notifications: validation, idempotency, preferences, suppression,
and the outbox sender writing real mail; GET shows status and history."""

import asyncio
import json

import tokens
from email_support import (  # noqa: F401
    QUEUE,
    add_profile,
    message,
    outbox,
    queue,
    start_email,
    wait_status,
)


async def test_queued_message_is_sent_to_the_outbox(start_email):
    service = await start_email()
    user = await add_profile(service.db, full_name="Ada Lovelace")
    resp = await queue(service, user, "payment_confirmation", {"amount": 2900, "currency": "usd"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and body["duplicate"] is False and body["type"] == "payment_confirmation"
    sent = await wait_status(service, body["id"], "sent")
    assert [h["status"] for h in sent["history"]] == ["queued", "sending", "sent"]
    assert all(h["at"] for h in sent["history"]) and sent["attempts"] == 1 and sent["sent_at"]
    [mail] = outbox(service)
    assert mail["To"] == f"{user}@example.com" and mail["Subject"] == "Your receipt: $29.00 paid"
    assert mail["Message-ID"] == sent["message_id"] and mail["Message-ID"].startswith("<")
    assert mail["List-Unsubscribe"] is None  # transactional mail carries no unsubscribe header
    assert mail.get_body(("plain",)).get_content().startswith("Vibe Coding Bible")
    assert "$29.00" in mail.get_body(("html",)).get_content()


async def test_engagement_mail_carries_one_click_unsubscribe_headers(start_email):
    service = await start_email(PUBLIC_URL="https://learn.example.com")
    user = await add_profile(service.db)
    body = await (await queue(service, user, "workshop_completion", {"workshop_id": "w1"})).json()
    await wait_status(service, body["id"], "sent")
    [mail] = outbox(service)
    header = mail["List-Unsubscribe"]
    assert header.startswith("<https://learn.example.com/functions/v1/email-notifications/unsubscribe?token=")
    assert "<mailto:unsubscribe@localhost?subject=unsubscribe>" in header
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_bad_requests_are_400_naming_the_problem(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    headers = tokens.auth(tokens.service_token())
    cases = [
        (b"not json", "invalid_json"),
        (b"[1]", "invalid_json"),
        (b'{"type": "welcome"}', "invalid_request"),
        (b'{"user_id": "u", "type": "welcome", "data": [], "extra": 1}', "invalid_request"),
        (b'{"user_id": "u", "type": "welcome", "idempotency_key": "has space"}', "invalid_request"),
        (f'{{"user_id": "{user}", "type": "newsletter"}}'.encode(), "unknown_email_type"),
        (f'{{"user_id": "{user}", "type": "payment_confirmation", "data": {{"amount": 5}}}}'.encode(),
         "invalid_email_data"),
    ]
    for body, code in cases:
        resp = await service.client.post(QUEUE, data=body, headers=headers)
        assert resp.status == 400, body
        error = (await resp.json())["error"]
        assert error["code"] == code and error["message"] and error["request_id"]
    resp = await queue(service, user, "payment_confirmation", {"amount": 5})
    assert (await resp.json())["error"]["details"] == ["data.currency: required"]
    resp = await queue(service, user, "newsletter")
    assert "welcome" in (await resp.json())["error"]["details"]["known"]
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_messages") == 0


async def test_unknown_user_and_missing_address(start_email):
    service = await start_email()
    resp = await queue(service, "nobody", "welcome")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "user_not_found"
    user = await add_profile(service.db, email_address="")
    await service.db.execute("UPDATE profiles SET email = NULL WHERE id = %s", (user,))
    resp = await queue(service, user, "welcome")
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "no_email_address"


async def test_only_the_service_role_and_admins_may_queue(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    resp = await service.client.post(QUEUE, json={"user_id": user, "type": "welcome"})
    assert resp.status == 401
    resp = await queue(service, user, "welcome", token=tokens.user_token(user))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    resp = await queue(service, user, "welcome", token=tokens.admin_token())
    assert resp.status == 202


async def test_same_idempotency_key_is_the_same_message_sent_once(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    answers = await asyncio.gather(*(queue(service, user, "welcome", key="signup-42") for _ in range(5)))
    bodies = [await r.json() for r in answers]
    assert {r.status for r in answers} == {202}
    assert len({b["id"] for b in bodies}) == 1 and sum(not b["duplicate"] for b in bodies) == 1
    await wait_status(service, bodies[0]["id"], "sent")
    again = await (await queue(service, user, "welcome", key="signup-42")).json()
    assert again["id"] == bodies[0]["id"] and again["status"] == "sent" and again["duplicate"] is True
    assert len(outbox(service)) == 1
    other = await add_profile(service.db)
    resp = await queue(service, other, "welcome", key="signup-42")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "idempotency_key_reused"


async def test_suppressed_address_gets_nothing_of_any_category(start_email):
    service = await start_email()
    user = await add_profile(service.db, email_address="Bounced@Example.com")
    await service.db.execute("INSERT INTO email_suppressions (email, reason, source, created_at) "
                             "VALUES ('bounced@example.com', 'hard bounce', 'test', 0)")
    for kind, data in (("payment_confirmation", {"amount": 1, "currency": "usd"}), ("weekly_progress", {})):
        resp = await queue(service, user, kind, data)
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "suppressed"
        detail = (await message(service, body["id"]))["history"][0]
        assert detail["status"] == "suppressed" and "hard bounce" in detail["detail"]
    await asyncio.sleep(0.2)
    assert outbox(service) == []


async def test_unsubscribe_blocks_engagement_but_never_transactional(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    await service.db.execute("INSERT INTO email_preferences (user_id, category, subscribed, updated_at) "
                             "VALUES (%s, 'engagement', FALSE, 0)", (user,))
    resp = await queue(service, user, "achievement", {"achievement": {"key": "k", "name": "Streak"}})
    assert resp.status == 200 and (await resp.json())["status"] == "suppressed"
    resp = await queue(service, user, "payment_failed", {"amount": 100, "currency": "usd"})
    assert resp.status == 202
    await wait_status(service, (await resp.json())["id"], "sent")
    assert [m["Subject"] for m in outbox(service)] == ["Your payment of $1.00 did not go through"]


async def test_status_is_visible_to_its_user_and_privileged_callers_only(start_email):
    service = await start_email()
    user = await add_profile(service.db)
    email_id = (await (await queue(service, user, "welcome")).json())["id"]
    for token, status in ((tokens.user_token(user), 200), (tokens.user_token("someone-else"), 404),
                          (tokens.admin_token(), 200)):
        resp = await service.client.get(f"{QUEUE}/{email_id}", headers=tokens.auth(token))
        assert resp.status == status
    resp = await service.client.get(f"{QUEUE}/{email_id}")
    assert resp.status == 401
    resp = await service.client.get(f"{QUEUE}/999999", headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_an_outbox_that_cannot_be_written_fails_the_attempt_and_the_retry_delivers(start_email):
    service = await start_email(EMAIL_RETRY_BASE_SECONDS="0.2", EMAIL_RETRY_MAX_SECONDS="0.2")
    folder = service.settings.data_dir / "outbox"
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the outbox folder should be")
    user = await add_profile(service.db)
    body = await (await queue(service, user, "payment_confirmation", {"amount": 100, "currency": "usd"})).json()
    failed = await wait_status(service, body["id"], "failed")
    assert failed["last_error"].startswith("outbox: ") and failed["attempts"] >= 1
    folder.unlink()  # the operator fixes it: the next attempt writes the mail
    sent = await wait_status(service, body["id"], "sent")
    assert sent["attempts"] >= 2
    [mail] = outbox(service)
    assert mail["Subject"] == "Your receipt: $1.00 paid" and not list(folder.glob("*.tmp"))


async def test_email_list_shows_the_queue_newest_first_and_filters_it(start_email, env):
    from conftest import run_cli

    service = await start_email()
    ada, bob = await add_profile(service.db), await add_profile(service.db)
    first = (await (await queue(service, ada, "welcome")).json())["id"]
    await wait_status(service, first, "sent")
    second = (await (await queue(service, bob, "payment_confirmation", {"amount": 100, "currency": "eur"})).json())["id"]
    await wait_status(service, second, "sent")

    code, out, err = await run_cli("email", "list", env=env)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[3], r[4], r[5]) for r in rows] == [
        (str(second), "sent", "payment_confirmation", f"{bob}@example.com"), (str(first), "sent", "welcome", f"{ada}@example.com")]
    code, out, _ = await run_cli("email", "list", "--user", ada, "--json", env=env)
    assert code == 0 and [(m["id"], m["type"], m["user_id"]) for m in json.loads(out)] == [(first, "welcome", ada)]
    code, out, _ = await run_cli("email", "list", "--status", "dead", "--json", env=env)
    assert (code, json.loads(out)) == (0, [])
    code, _, err = await run_cli("email", "list", "--status", "lost", env=env)
    assert code == 2 and "invalid choice" in err
