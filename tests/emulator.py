"""Fixtures for the tests that talk to Stripe: the emulator (tests/stripe_emulator.py: localstripe
with its bridge and the Checkout/portal fake), started once per session on 127.0.0.1, and
emptied before each test that uses it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_service import free_port

KEY = "sk_test_" + "localstripe0000000000"
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def stripe_emulator_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "stripe_emulator.py"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the Stripe emulator did not start: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


class Emulator:
    """The emulator as a test uses it: Stripe's API with the test key, and the fake's controls."""

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url = url
        self.session = session
        self.env = {"STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": url}

    async def api(self, method: str, path: str, **params: Any) -> dict:
        async with self.session.request(method, self.url + path, data=_form(params) if method != "GET" else None,
                                        params=_form(params) if method == "GET" else None,
                                        headers={"Authorization": f"Bearer {KEY}"}) as resp:
            body = await resp.json()
            assert resp.status < 300, (resp.status, body)
            return body

    async def control(self, method: str, path: str, /, **body: Any) -> Any:
        config = path.startswith("/_config")  # localstripe's own routes take a form
        async with self.session.request(method, self.url + path, json=None if config else (body or None),
                                        data=_form(body) if config and body else None) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json() if resp.content_type == "application/json" else None

    async def plan(self, price_id: str, amount: int, *, tier: str | None = None, lookup_key: str | None = None,
                   interval: str = "month") -> dict:
        meta = {**({"tier": tier} if tier else {}), **({"lookup_key": lookup_key} if lookup_key else {})}
        return await self.api("POST", "/v1/plans", id=price_id, amount=amount, currency="eur", interval=interval,
                              product={"name": price_id}, metadata=meta)

    async def customer(self, email: str, user_id: str | None = None, *, card: bool = True) -> dict:
        extra = {"payment_method": "pm_card_visa",
                 "invoice_settings": {"default_payment_method": "pm_card_visa"}} if card else {}
        return await self.api("POST", "/v1/customers", email=email,
                              metadata={"userId": user_id} if user_id else {}, **extra)

    async def subscribe(self, customer: str, price: str, **params: Any) -> dict:
        return await self.api("POST", "/v1/subscriptions", customer=customer, items=[{"price": price}], **params)

    async def webhook_to(self, url: str, secret: str, name: str = "vibe") -> None:
        await self.control("POST", f"/_config/webhooks/{name}", url=url, secret=secret)

    async def no_webhook(self, name: str = "vibe") -> None:
        await self.control("DELETE", f"/_config/webhooks/{name}")

    async def requests(self, path: str | None = None) -> list[dict]:
        return [r for r in await self.control("GET", "/_fake/requests") if path is None or r["path"] == path]

    async def fail_next(self, path: str, status: int, kind: str, message: str, **extra: Any) -> None:
        await self.control("POST", "/_fake/fail", path=path, status=status, type=kind, message=message, **extra)

    async def complete_checkout(self, session_id: str) -> dict:
        # the card the learner types on Stripe's page
        return await self.control("POST", f"/_fake/checkout/sessions/{session_id}/complete")


def _form(params: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: a[b]=1, items[0][price]=…"""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict):
            out += _form(value, name)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                out += _form(item, f"{name}[{i}]") if isinstance(item, dict) else [(f"{name}[{i}]", str(item))]
        elif isinstance(value, bool):
            out.append((name, str(value).lower()))
        elif value is not None:
            out.append((name, str(value)))
    return out


@pytest.fixture
async def stripe_emulator(stripe_emulator_url):
    """The emulator, emptied: no objects, no webhook endpoints, no recorded requests."""
    async with aiohttp.ClientSession() as session:
        emulator = Emulator(stripe_emulator_url, session)
        await emulator.control("POST", "/_fake/reset")
        yield emulator
