"""What the email tests share: profiles, a real SMTP server on loopback (aiosmtpd), a local
server that behaves like Resend's API, Svix signing, and waiting for the queue."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import tokens
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult
from conftest import wait_until

from vibe.email import svix

SVIX_SECRET = "whsec_" + base64.b64encode(b"resend-webhook-test-secret-32byt").decode()
QUEUE = "/functions/v1/email-notifications"


async def add_profile(db, user_id: str | None = None, *, email_address: str | None = None, **columns: Any) -> str:
    user_id = user_id or f"user-{uuid.uuid4().hex[:10]}"
    values = {"id": user_id, "email": email_address if email_address is not None else f"{user_id}@example.com",
              "full_name": "Grace Hopper", "created_at": time.time(), "updated_at": time.time(), **columns}
    await db.execute(
        f"INSERT INTO profiles ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
        list(values.values()),
    )
    return user_id


async def queue(service, user_id: str, kind: str, data: dict | None = None, *, key: str | None = None,
                token: str | None = None):
    body: dict[str, Any] = {"user_id": user_id, "type": kind, "data": data or {}}
    if key:
        body["idempotency_key"] = key
    return await service.client.post(QUEUE, json=body, headers=tokens.auth(token or tokens.service_token()))


async def message(service, email_id: int) -> dict:
    resp = await service.client.get(f"{QUEUE}/{email_id}", headers=tokens.auth(tokens.service_token()))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_status(service, email_id: int, *statuses: str, timeout: float = 10.0) -> dict:
    async def done() -> bool:
        return await service.db.fetchval("SELECT status FROM email_messages WHERE id = %s", (email_id,)) in statuses

    await wait_until(done, timeout)
    return await message(service, email_id)


def outbox(service) -> list[email.message.EmailMessage]:
    folder = Path(service.settings.data_dir) / "outbox"
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(folder.glob("*.eml"))]


def svix_headers(body: bytes, *, secret: str = SVIX_SECRET, timestamp: int | None = None,
                 msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"svix-id": msg_id, "svix-timestamp": str(timestamp),
            "svix-signature": svix.sign(secret, msg_id, timestamp, body), "Content-Type": "application/json"}


class Inbox:
    """An aiosmtpd handler that keeps what arrives, parsed with the standard library."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: dict[str, str] = {}  # recipient -> SMTP reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
async def smtp_server():
    """A real SMTP server on loopback, in this process and on this event loop."""
    inbox = Inbox()
    logins: list[str] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
        if ok:
            logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(inbox, hostname="mail.test", authenticator=authenticator, auth_require_tls=False),
        "127.0.0.1", 0,
    )
    inbox.port = server.sockets[0].getsockname()[1]
    inbox.logins = logins
    yield inbox
    server.close()
    await server.wait_closed()


class FakeResend:
    """Behaves like POST https://api.resend.com/emails: auth, validation, idempotency keys, and a
    script of failures (`fail_with`) answered before it accepts again."""

    KEY = "re_test_key"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.sent: dict[str, dict] = {}
        self.by_key: dict[str, str] = {}
        self.script: list[tuple[int, dict]] = []
        self.down = False
        self.delay = 0.0  # seconds each answer takes

    def fail_with(self, status: int, times: int = 1, headers: dict | None = None) -> None:
        self.script.extend([(status, headers or {})] * times)

    async def emails(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != f"Bearer {self.KEY}":
            return web.json_response({"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"},
                                     status=401)
        if self.down:
            return web.json_response({"statusCode": 500, "name": "internal_server_error", "message": "down"}, status=500)
        if self.script:
            status, headers = self.script.pop(0)
            names = {429: "rate_limit_exceeded", 500: "internal_server_error", 422: "validation_error",
                     400: "invalid_idempotency_key"}
            return web.json_response({"statusCode": status, "name": names.get(status, "error"), "message": "scripted"},
                                     status=status, headers=headers)
        missing = [f for f in ("from", "to", "subject") if not body.get(f)]
        if missing:
            return web.json_response({"statusCode": 422, "name": "missing_required_field",
                                      "message": f"missing {missing}"}, status=422)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.by_key:
            return web.json_response({"id": self.by_key[key]})
        email_id = str(uuid.uuid4())
        self.sent[email_id] = body
        if key:
            self.by_key[key] = email_id
        return web.json_response({"id": email_id})


@pytest.fixture
async def fake_resend(aiohttp_server):
    fake = FakeResend()
    app = web.Application()
    app.router.add_post("/emails", fake.emails)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url(""))
    return fake


def resend_env(fake: FakeResend, **extra: str) -> dict[str, str]:
    return {"EMAIL_BACKEND": "resend", "EMAIL_SERVICE_URL": fake.url, "EMAIL_SERVICE_KEY": FakeResend.KEY,
            "EMAIL_POLL_SECONDS": "0.05", "EMAIL_RETRY_BASE_SECONDS": "0.05", "EMAIL_RETRY_MAX_SECONDS": "0.2",
            **extra}


def json_body(data: dict) -> bytes:
    return json.dumps(data).encode()


@pytest.fixture
def start_email(start_service):
    """The service with the scheduler off (tests run passes themselves) and a fast worker."""

    async def start(**overrides: str):
        settings = {"VIBE_EMAIL_SCHEDULER": "false", "EMAIL_POLL_SECONDS": "0.05", **overrides}
        return await start_service(**settings)

    return start
