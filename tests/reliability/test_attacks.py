"""What attackers try, each answered with the right 4xx, leaving no trace in the data."""

import base64
import email
import email.policy
import io
import json
import time
import uuid
import warnings
from pathlib import Path

import jwt
import pytest
import tokens
from conftest import SECRET, make_event, wait_until
from cryptography.hazmat.primitives.asymmetric import rsa

from vibe.billing import signature as stripe_signature

pytestmark = pytest.mark.reliability

USERS = "/functions/v1/user-management"
ANALYTICS = "/functions/v1/analytics-tracking"
WEBHOOK = "/functions/v1/stripe-webhook"
WRITE_KEY = "wk_attacks"

INJECTIONS = [
    "'; DROP TABLE profiles; --",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "1; DELETE FROM stripe_events WHERE 1=1",
    "x' UNION SELECT id, email FROM profiles --",
    "%s %s %(x)s",
    "\\'; SELECT pg_sleep(5); --",
    "$$; DROP SCHEMA public CASCADE; $$",
]


async def tables(service) -> dict[str, int]:
    """Row counts of the tables an attack could touch."""
    names = ("profiles", "stripe_events", "payments", "commissions", "user_progress", "analytics_events",
             "subscription_audit")
    return {n: await service.db.fetchval(f"SELECT COUNT(*) FROM {n}") for n in names}


async def act(service, token, action, data, **kw):
    resp = await service.client.post(USERS, json={"action": action, "data": data}, headers=tokens.auth(token), **kw)
    return resp.status, await resp.json()


def b64(part: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


@pytest.fixture
async def service(start_service):
    return await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)


async def test_forged_tampered_and_replayed_webhooks_are_refused_and_leave_nothing(service):
    event = make_event("customer.created", {"id": "cus_attack", "object": "customer",
                                            "metadata": {"user_id": "victim"}})
    body = json.dumps(event).encode()
    before = await tables(service)
    attempts = {
        "wrong secret": stripe_signature.sign(body, "whsec_attacker"),
        "replayed (10 minutes old)": stripe_signature.sign(body, SECRET, int(time.time()) - 600),
        "from the future": stripe_signature.sign(body, SECRET, int(time.time()) + 600),
        "signature of another body": stripe_signature.sign(body + b" ", SECRET),
        "no v1": f"t={int(time.time())},v0=abc",
        "garbage": "not a signature",
    }
    for name, header in attempts.items():
        resp = await service.client.post(WEBHOOK, data=body, headers={"Stripe-Signature": header,
                                                                      "Content-Type": "application/json"})
        assert resp.status == 400, name
        assert (await resp.json())["error"]["code"] in (
            "invalid_signature", "timestamp_out_of_tolerance", "malformed_signature", "no_matching_signature"), name
    resp = await service.client.post(WEBHOOK, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "missing_signature"
    assert await tables(service) == before
    # The genuine delivery, then the same signed request replayed: one event, one effect.
    header = stripe_signature.sign(body, SECRET)
    for _ in range(3):
        resp = await service.client.post(WEBHOOK, data=body, headers={"Stripe-Signature": header,
                                                                      "Content-Type": "application/json"})
        assert resp.status == 200
    await service.settle()
    assert await service.db.fetchval("SELECT COUNT(*) FROM stripe_events") == 1


def hs512(claims: dict) -> str:
    with warnings.catch_warnings():  # the test secret is short for SHA-512; the point is the algorithm
        warnings.simplefilter("ignore")
        return jwt.encode(claims, tokens.JWT_SECRET, algorithm="HS512")


def bad_tokens(user_id: str) -> dict[str, str]:
    claims = tokens.user_claims(user_id)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "alg NoNe": f"{b64({'alg': 'NoNe', 'typ': 'JWT'})}.{b64(claims)}.",
        "wrong key": tokens.hs256(claims, "another-secret-of-at-least-thirty-two-characters"),
        "HS512 with the right secret": hs512(claims),
        "RS256 with an unknown key": jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "attacker"}),
        "expired": tokens.user_token(user_id, ttl=-3600),
        "another audience": tokens.hs256({**claims, "aud": "some-other-app"}),
        "no exp": tokens.hs256({k: v for k, v in claims.items() if k != "exp"}),
        "issued in the future": tokens.hs256({**claims, "iat": int(time.time()) + 3600}),
        "signature stripped": tokens.user_token(user_id).rsplit(".", 1)[0] + ".",
        "not a jwt": "hello",
    }


async def test_bad_tokens_are_401_and_create_nothing(service):
    user_id = str(uuid.uuid4())
    before = await tables(service)
    for name, token in bad_tokens(user_id).items():
        status, body = await act(service, token, "create_profile", {"display_name": "Mallory"})
        assert status == 401, (name, body)
        assert body["error"]["code"] in ("invalid_token", "token_expired", "invalid_authorization"), name
        resp = await service.client.post(f"{ANALYTICS}/event", json={"event": "x", "user_id": user_id},
                                         headers=tokens.auth(token))
        assert resp.status == 401, name
    assert await tables(service) == before


async def test_a_user_cannot_read_or_change_another_users_data(service):
    victim, mallory = str(uuid.uuid4()), str(uuid.uuid4())
    vtok, mtok = tokens.user_token(victim), tokens.user_token(mallory)
    assert (await act(service, vtok, "create_profile", {"display_name": "Victim"}))[0] == 200
    assert (await act(service, mtok, "create_profile", {"display_name": "Mallory"}))[0] == 200
    items = [{"resource_type": "workshop", "resource_id": "1", "status": "in_progress", "progress": 30}]
    assert (await act(service, vtok, "sync_progress", {"items": items}))[0] == 200
    before = await tables(service)
    victim_row = await service.db.fetchone("SELECT * FROM profiles WHERE id = %s", (victim,))

    status, body = await act(service, mtok, "get_profile", {"user_id": victim})
    assert status == 403 and "Victim" not in json.dumps(body)
    for action, data in [
        ("update_profile", {"user_id": victim, "display_name": "pwned"}),
        ("update_profile", {"id": victim, "display_name": "pwned"}),
        ("sync_progress", {"user_id": victim, "items": items}),
        ("update_subscription", {"user_id": victim, "tier": "expert", "reason": "x"}),
        ("bulk_update", {"items": [{"user_id": victim, "display_name": "pwned"}]}),
    ]:
        status, body = await act(service, mtok, action, data)
        assert status in (400, 403), (action, status, body)
    # Analytics: another user's journey, events and erasure; sending events in their name.
    for method, path in [("GET", f"{ANALYTICS}/journey/{victim}"), ("GET", f"{ANALYTICS}/users/{victim}/events"),
                         ("DELETE", f"{ANALYTICS}/users/{victim}")]:
        resp = await service.client.request(method, path, headers=tokens.auth(mtok))
        assert resp.status == 403, (method, path, resp.status)
    resp = await service.client.post(f"{ANALYTICS}/event", json={"event": "forged", "user_id": victim},
                                     headers=tokens.auth(mtok))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "user_mismatch"
    resp = await service.client.post(f"{ANALYTICS}/event", json={"event": "forged", "user_id": victim},
                                     headers={"X-Write-Key": "wk_guess"})
    assert resp.status == 401

    assert await tables(service) == before
    assert await service.db.fetchone("SELECT * FROM profiles WHERE id = %s", (victim,)) == victim_row
    status, body = await act(service, vtok, "get_profile", {})
    assert body["progress"][0]["progress"] == 30 and body["profile"]["display_name"] == "Victim"


async def test_sql_injection_in_every_string_field_is_inert(service):
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    assert (await act(service, token, "create_profile", {}))[0] == 200
    for payload in INJECTIONS:
        before = await tables(service)
        # Free text is stored literally ...
        status, body = await act(service, token, "update_profile", {"display_name": payload, "full_name": payload})
        assert status == 200 and body["profile"]["display_name"] == payload.strip()
        # ... and structured fields are refused by their shape.
        status, body = await act(service, tokens.user_token(), "create_profile", {"referral_code": payload})
        assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.referral_code"
        for action, data in [
            ("update_profile", {"locale": payload}),
            ("update_profile", {"avatar_url": payload}),
            ("check_access", {"resource_type": payload, "resource_id": "1"}),
            ("check_access", {"resource_type": "workshop", "resource_id": payload}),
            ("sync_progress", {"items": [{"resource_type": payload, "resource_id": "1", "status": "completed"}]}),
            ("sync_progress", {"items": [{"resource_type": "workshop", "resource_id": payload,
                                          "status": "completed"}]}),
            ("sync_progress", {"items": [{"resource_type": "workshop", "resource_id": "1", "status": payload}]}),
            ("get_profile", {"user_id": payload}),
        ]:
            status, body = await act(service, token, action, data)
            assert 400 <= status < 500, (action, data, status, body)
        # Analytics: names, ids and properties are data, never SQL.
        event = {"event": payload[:100], "user_id": user_id, "message_id": f"inj-{INJECTIONS.index(payload)}",
                 "properties": {payload: payload}, "context": {"page": {"path": payload}}}
        resp = await service.client.post(f"{ANALYTICS}/event", json=event, headers=tokens.auth(token))
        assert resp.status in (200, 400), await resp.text()
        for path in (f"{ANALYTICS}/journey/{payload}", f"{ANALYTICS}/metrics?name={payload}"):
            resp = await service.client.get(path, headers=tokens.auth(tokens.admin_token()))
            assert resp.status in (200, 400, 404), (path, resp.status)
        after = await tables(service)
        assert after["profiles"] == before["profiles"] and after["stripe_events"] == before["stripe_events"]
    row = await service.db.fetchone("SELECT display_name FROM profiles WHERE id = %s", (user_id,))
    assert row["display_name"] == INJECTIONS[-1]
    stored = await service.db.fetchall("SELECT event FROM analytics_events WHERE user_id = %s", (user_id,))
    assert {r["event"] for r in stored} <= {p[:100].strip() for p in INJECTIONS}


async def test_oversized_deep_and_mistyped_bodies_get_4xx(service):
    token = tokens.user_token()
    before = await tables(service)
    deep = b'{"action": "create_profile", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases = [
        (USERS, deep, "application/json", 400, "too_deep"),
        (f"{ANALYTICS}/event", b'{"event": "x", "properties": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
         "application/json", 400, "too_deep"),
        (USERS, b'{"action": "get_profile"' + b" " * (2 * 1024 * 1024) + b"}", "application/json", 413, None),
        (f"{ANALYTICS}/event", b'{"event": "' + b"x" * (600 * 1024) + b'"}', "application/json", 413, None),
        (USERS, b'{"action": "get_profile"}', "text/plain", 415, "unsupported_media_type"),
        (USERS, b"action=get_profile", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (USERS, b'{"action": "get_profile"}', "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
        (USERS, b"\xff\xfe{}", "application/json", 400, "invalid_json"),
        (USERS, b"[]", "application/json", 400, "invalid_body"),
        (USERS, b'"a string"', "application/json", 400, "invalid_body"),
        (USERS, b'{"action": "sync_progress", "data": {"items": [{"resource_type": "workshop", "resource_id": "1", '
                b'"status": "completed", "progress": NaN}]}}', "application/json", 400, "invalid_data"),
    ]
    for path, body, ctype, status, code in cases:
        resp = await service.client.post(path, data=io.BytesIO(body), headers={
            "Content-Type": ctype, **tokens.auth(token)})
        assert resp.status == status, (path, ctype, body[:40], resp.status, await resp.text())
        answer = await resp.json()
        assert answer["error"]["request_id"]
        if code:
            assert answer["error"]["code"] == code, (path, body[:40], answer)
    assert await tables(service) == before


UNICODE_NAMES = [
    "Zoë Ångström", "李小龙", "محمد", "שָׁלוֹם", "👩🏽‍💻 Dev", "e\u0301\u0301\u0301", "\u202eevil\u202c",
    "A\u200bB", "𝕍𝕚𝕓𝕖", "ﷺ" * 10, "Ⅻ", "\U0010ffff",
]


async def test_unicode_edge_cases_round_trip_or_are_refused_cleanly(service):
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    assert (await act(service, token, "create_profile", {}))[0] == 200
    for name in UNICODE_NAMES:
        status, body = await act(service, token, "update_profile", {"display_name": name})
        assert status == 200 and body["profile"]["display_name"] == name, (name, body)
        status, body = await act(service, token, "get_profile", {})
        assert body["profile"]["display_name"] == name
    raw = '{"action": "update_profile", "data": {"display_name": "%s"}}'
    for bad in ("a\\u0000b", "\\ud800", "x\\udfffy", "\\udc00\\ud800"):
        resp = await service.client.post(USERS, data=(raw % bad).encode(), headers={
            "Content-Type": "application/json", **tokens.auth(token)})
        assert resp.status == 400, bad
        assert (await resp.json())["error"]["details"]["errors"][0]["field"] == "data.display_name"
    status, body = await act(service, token, "get_profile", {})
    assert body["profile"]["display_name"] == UNICODE_NAMES[-1]
    # Analytics keeps unicode in names and properties exactly.
    event = {"event": "Leçon terminée ✓", "user_id": user_id, "message_id": "uni-1",
             "properties": {name: name for name in UNICODE_NAMES}}
    resp = await service.client.post(f"{ANALYTICS}/event", json=event, headers=tokens.auth(token))
    assert resp.status == 200, await resp.text()
    resp = await service.client.get(f"{ANALYTICS}/users/{user_id}/events", headers=tokens.auth(token))
    assert resp.status == 200
    lines = [json.loads(line) for line in (await resp.text()).splitlines() if line]
    got = next(e for e in lines if e["message_id"] == "uni-1")
    assert got["event"] == "Leçon terminée ✓" and got["properties"] == event["properties"]


async def test_template_syntax_in_names_renders_literally_in_mail(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, EMAIL_POLL_SECONDS="0.05",
                                  VIBE_EMAIL_SCHEDULER="false")
    names = {
        "{{7*7}}": "{{7*7}}",
        "{%print(1)%}": "{%print(1)%}",
        "{{config.items()}}": "{{config.items()}}",
        "<script>alert(1)</script>": "<script>alert(1)</script>",
        "Zoë👩🏽‍💻": "Zoë👩🏽‍💻",
        "\u202eevil": "\u202eevil",
    }
    users = {}
    for name in names:
        user_id = str(uuid.uuid4())
        status, body = await act(service, tokens.user_token(user_id, email=f"{user_id[:8]}@example.com"),
                                 "create_profile", {"display_name": name})
        assert status == 200, body
        users[f"{user_id[:8]}@example.com"] = name

    async def sent() -> bool:
        return await service.db.fetchval("SELECT COUNT(*) FROM email_messages WHERE status = 'sent'") == len(names)

    await wait_until(sent, 20)
    folder = Path(service.settings.data_dir) / "outbox"
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in folder.glob("*.eml")]
    assert len(mails) == len(names)
    for mail in mails:
        name = users[mail["To"].addresses[0].addr_spec]
        text = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        assert f"Hi {name}," in text, (name, text[:200])
        assert f", {name}!" in str(mail["Subject"])
        assert "Hi 49" not in text and "<Config" not in text and "print(1)" not in html.replace(name, "")
        if "<script>" in name:
            assert "<script>" not in html and "&lt;script&gt;" in html  # escaped in HTML


async def test_email_requests_with_unsendable_or_hostile_data(start_service):
    service = await start_service(EMAIL_POLL_SECONDS="0.05", VIBE_EMAIL_SCHEDULER="false")
    user_id = str(uuid.uuid4())
    assert (await act(service, tokens.user_token(user_id), "create_profile", {"display_name": "Ada"}))[0] == 200
    headers = {"Content-Type": "application/json", **tokens.auth(tokens.service_token())}
    receipt = '{"user_id": "%s", "type": "payment_confirmation", "data": {"amount": 1, "currency": "usd", %s}}'
    refused = [
        receipt % (user_id, '"description": "a\\u0000b"'),
        receipt % (user_id, '"description": "\\ud800"'),
        receipt % ("\\udc00", '"description": "x"'),
        receipt % ("a\\u0000", '"description": "x"'),
        '{"user_id": "%s", "type": "welcome", "data": {}, "idempotency_key": "\\ud800"}' % user_id,
        '{"user_id": "%s", "type": "welcome", "data": ' % user_id + "[" * 5000 + "]" * 5000 + "}",
    ]
    before = await service.db.fetchval("SELECT COUNT(*) FROM email_messages")
    for body in refused:
        resp = await service.client.post("/functions/v1/email-notifications", data=body.encode(), headers=headers)
        assert resp.status in (400, 413), (body[:80], resp.status, await resp.text())
    assert await service.db.fetchval("SELECT COUNT(*) FROM email_messages") == before
    # Template syntax and unicode in template data are data: rendered literally, sent once.
    description = "{{7*7}} {% raw %} Zoë 👩🏽‍💻 \u202eRTL"
    resp = await service.client.post("/functions/v1/email-notifications", headers=headers, json={
        "user_id": user_id, "type": "payment_confirmation", "idempotency_key": "hostile-1",
        "data": {"amount": 4900, "currency": "eur", "description": description}})
    assert resp.status == 202, await resp.text()

    async def all_sent() -> bool:
        rows = await service.db.fetchall("SELECT status FROM email_messages")
        return {r["status"] for r in rows} == {"sent"}

    await wait_until(all_sent, 20)
    folder = Path(service.settings.data_dir) / "outbox"
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in folder.glob("*.eml")]
    texts = [m.get_body(("plain",)).get_content() for m in mails]
    assert sum(description in t for t in texts) == 1
