"""The three ways mail leaves the service, chosen by EMAIL_BACKEND: outbox, resend, smtp.

A sender's `send(message)` returns the provider's id (or None) or raises `SendError`:
`transient=True` means try again later (honouring `retry_after`), False means give up.
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import functools
import os
import re
import time
import urllib.parse
import uuid
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import Callable

import aiohttp
import aiosmtplib

from vibe.config import Settings
from vibe.ops.resilience import parse_retry_after


class SendError(Exception):
    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Outgoing:
    id: int
    message_id: str
    sender: str
    to: str
    subject: str
    html: str
    text: str
    idempotency_key: str
    type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def envelope_sender(self) -> str:
        return _envelope(self.sender)

    def raw(self) -> bytes:
        """The message as RFC 5322 bytes (CRLF): multipart/alternative, text then HTML, both
        UTF-8 quoted-printable. Built directly: the email package's generator costs ~1.5 ms."""
        boundary = f"=_vibe_{uuid.uuid4().hex}"
        headers = [
            ("From", _address(self.sender)), ("To", _address(self.to)), ("Subject", _header(self.subject)),
            ("Date", formatdate(time.time(), usegmt=True)), ("Message-ID", self.message_id),
            *((name, _header(value)) for name, value in self.headers.items()),
            ("MIME-Version", "1.0"), ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        lines = [f"{name}: {value}" for name, value in headers]
        head = "\r\n".join(lines).encode("ascii")
        parts = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: " + kind + b"; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(body) + b"\r\n"
            for kind, body in ((b"text/plain", self.text), (b"text/html", self.html))
        )
        return head + b"\r\n\r\n" + parts + b"--" + boundary.encode() + b"--\r\n"


@functools.lru_cache(maxsize=16)
def _envelope(sender: str) -> str:
    return parseaddr(sender)[1]


def _header(value: str) -> str:
    """A header value: ASCII as it is (one line), anything else RFC 2047-encoded."""
    value = " ".join(value.split())
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


_PLAIN_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")


@functools.lru_cache(maxsize=64)
def _address(value: str) -> str:
    """An address header value (the From address repeats: parsed once)."""
    if _PLAIN_ADDRESS.match(value):
        return value
    name, address = parseaddr(value)
    if not address or "\n" in value or "\r" in value:
        raise ValueError(f"not an email address: {value!r}")
    return formataddr((name, address), charset="utf-8")


def _qp(text: str) -> bytes:
    body = ("\n".join(text.splitlines()) + "\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")


class OutboxSender:
    """Writes each message as an .eml file in VIBE_DATA_DIR/outbox (the embedded default)."""

    name = "outbox"

    def __init__(self, folder: Path):
        self.folder = folder

    def _write(self, name: str, raw: bytes) -> None:
        """In a worker thread. Plain os calls: each system call lets go of the GIL, and the event
        loop, busy with everything else, must hand it back; `open()` and pathlib make twice as
        many (isatty, seek, stat, mkdir) as writing a file needs."""
        final = os.path.join(self.folder, name)
        temp = final + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o644)
        except FileNotFoundError:  # the first message, or the folder was removed
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, flags, 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)  # a reader never sees half a message

    async def send(self, message: Outgoing) -> str | None:
        name = f"{message.id:010d}.eml"
        raw = message.raw()  # on the loop: in the thread it would only contend for the GIL
        try:
            await asyncio.to_thread(self._write, name, raw)
        except OSError as exc:
            raise SendError(f"outbox: {exc}", transient=True) from exc
        return name

    async def close(self) -> None:
        pass


class ResendSender:
    """POST {EMAIL_SERVICE_URL}/emails with one Idempotency-Key per message."""

    name = "resend"

    def __init__(self, base_url: str, api_key: str, session: Callable[[], aiohttp.ClientSession], timeout: float):
        self.url = base_url.rstrip("/") + "/emails"
        self.api_key = api_key
        self._session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, message: Outgoing) -> str | None:
        body = {"from": message.sender, "to": [message.to], "subject": message.subject, "html": message.html,
                "text": message.text, "headers": {"Message-ID": message.message_id, **message.headers},
                "tags": [{"name": "email_id", "value": str(message.id)}, {"name": "type", "value": message.type}]}
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": message.idempotency_key[:256]}
        try:
            async with self._session().post(self.url, json=body, headers=headers, timeout=self.timeout) as resp:
                payload = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status < 300:
                    return (payload or {}).get("id")
                error = f"resend {resp.status}: {_error_text(payload)}"
                # 429 (rate limit) and 409 (a concurrent request with the same key) are worth retrying,
                # as is anything on Resend's side; other 4xx mean this message will never be accepted.
                transient = resp.status in (408, 409, 429) or resp.status >= 500
                raise SendError(error, transient=transient, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise SendError(f"resend: {type(exc).__name__}: {exc}", transient=True) from exc

    async def close(self) -> None:
        pass


def _error_text(payload) -> str:
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("name") or payload)[:500]
    return str(payload)[:500]


class SmtpSender:
    """aiosmtplib over EMAIL_SMTP_URL, reusing up to `pool_size` open connections.

    `smtp://user:password@host:587` uses STARTTLS when the server offers it (`?starttls=required`
    insists, `?starttls=off` never); `smtps://host:465` is TLS from the first byte.
    """

    name = "smtp"

    def __init__(self, url: str, *, pool_size: int, timeout: float, idle_seconds: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        implicit = parts.scheme == "smtps"
        starttls = {"required": True, "off": False}.get(query.get("starttls", "auto"))
        self.options = dict(
            hostname=parts.hostname or "localhost", port=parts.port or (465 if implicit else 25),
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            use_tls=implicit, start_tls=None if implicit else starttls, timeout=timeout,
            validate_certs=query.get("verify", "true") != "false",
        )
        self.pool_size = pool_size
        self.idle_seconds = idle_seconds
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots = asyncio.Semaphore(pool_size)

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool]:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.idle_seconds:
                return client, True
            await self._discard(client)
        client = aiosmtplib.SMTP(**self.options)
        await client.connect()
        return client, False

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            client.close()

    async def send(self, message: Outgoing) -> str | None:
        raw = message.raw()
        async with self._slots:
            for _ in range(2):  # a reused connection the server closed meanwhile: once more on a new one
                try:
                    client, reused = await self._connection()
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                    raise SendError(f"smtp connect: {type(exc).__name__}: {exc}", transient=True) from exc
                try:
                    await client.sendmail(message.envelope_sender, [message.to], raw)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    await self._discard(client)
                    if reused:
                        continue
                    raise SendError(f"smtp: {exc}", transient=True) from exc
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    await self._recycle(client)
                    codes = [err.code for err in exc.recipients]
                    raise SendError(f"smtp: recipient refused: {exc}", transient=all(400 <= c < 500 for c in codes)) from exc
                except aiosmtplib.SMTPResponseException as exc:
                    await self._recycle(client)
                    raise SendError(f"smtp {exc.code}: {exc.message}", transient=exc.code < 500) from exc
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                    await self._discard(client)
                    raise SendError(f"smtp: {type(exc).__name__}: {exc}", transient=True) from exc
                self._idle.append((client, time.monotonic()))
                return None
        raise SendError("smtp: server keeps closing the connection", transient=True)

    async def _recycle(self, client: aiosmtplib.SMTP) -> None:
        """After a refused message the session is still good once reset."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await self._discard(client)
        else:
            self._idle.append((client, time.monotonic()))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await self._discard(client)


def create_sender(settings: Settings, session: Callable[[], aiohttp.ClientSession]):
    if settings.email.backend == "resend":
        return ResendSender(settings.email.service_url, settings.email.service_key, session,
                            settings.email.send_timeout_seconds)
    if settings.email.backend == "smtp":
        return SmtpSender(settings.email.smtp_url, pool_size=settings.email.concurrency,
                          timeout=settings.email.send_timeout_seconds)
    return OutboxSender(settings.data_dir / "outbox")
