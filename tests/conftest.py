"""Shared fixtures: the service on a fresh database per test, and ways to talk to it.

The suite runs on SQLite; with DATABASE_URL=postgresql://... it runs the same tests on
PostgreSQL, each test in a schema of its own (dropped afterwards).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import os
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import tokens
from aiohttp import web
from databases import PostgresSchemas, SqliteTemplate

from vibe.billing import signature as stripe_signature
from vibe.billing.keys import DISPATCHER
from vibe.config import Settings
from vibe.keys import DB
from vibe.plugins.host import build_plugin_manager
from vibe.web.app import create_app
from vibe.web.shutdown import describe

pytest_plugins = ["hang_guard", "emulator"]  # on a pytest-timeout, every asyncio task's stack; the Stripe emulator

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
SECRET = "whsec_test_primary_secret"
ROOT = Path(__file__).resolve().parent.parent

PG_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = PG_URL.startswith(("postgresql://", "postgres://"))
postgres_only = pytest.mark.skipif(
    not ON_POSTGRES, reason="PostgreSQL-only behaviour: set DATABASE_URL=postgresql://... to run it"
)


def load_event(name: str) -> dict[str, Any]:
    """A fixture event (events/NAME.json), deep-copied so tests can vary it."""
    return copy.deepcopy(json.loads((FIXTURES / "events" / f"{name}.json").read_text()))


def load_data(name: str) -> dict[str, Any]:
    """A newer-API `data` part (basil-data/NAME.data.json)."""
    return copy.deepcopy(json.loads((FIXTURES / "basil-data" / f"{name}.data.json").read_text()))


def signed(event: dict | bytes, secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """An event's body and the headers Stripe sends with it."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return body, {"Stripe-Signature": stripe_signature.sign(body, secret, timestamp), "Content-Type": "application/json"}


def make_event(event_type: str, obj: dict, *, created: int | None = None, event_id: str | None = None,
               **extra: Any) -> dict[str, Any]:
    event = {"id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2025-03-31.basil",
             "created": created or int(time.time()), "livemode": False, "pending_webhooks": 1,
             "type": event_type, "data": {"object": obj}}
    event.update(extra)
    return event


@pytest.fixture(scope="session")
def database_template(tmp_path_factory):
    """Where each test's database comes from (tests/databases.py)."""
    if not ON_POSTGRES:
        yield SqliteTemplate(tmp_path_factory.mktemp("template"))
        return
    schemas = PostgresSchemas(PG_URL)
    yield schemas
    schemas.close()


@pytest.fixture
def database_url(database_template, tmp_path):
    """A fresh database for one test (on SQLite already migrated: a copy of the template)."""
    if not ON_POSTGRES:
        yield database_template.copy(tmp_path)
        return
    url, drop = database_template.create()
    yield url
    database_template.drop(drop)


@pytest.fixture
def env(database_url, tmp_path) -> dict[str, str]:
    """The environment a test's service runs with (tests add to it before starting)."""
    return {
        "DATABASE_URL": database_url,
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRICE_TIERS": "price_000000000000000000000000=pro,FFBEGINNER_00000000000000=starter",
        "STRIPE_RETRY_BASE_SECONDS": "0.05",
        "STRIPE_POLL_SECONDS": "0.05",
        "LOG_LEVEL": "warning",
        # The mail tests read English copy; tests/test_email_locales.py covers the default, German
        "EMAIL_DEFAULT_LOCALE": "en",
        "SUPABASE_JWT_SECRET": tokens.JWT_SECRET,
        # PostgreSQL: every statement goes through PREPARE from its first use, so the whole suite
        # checks that a prepared statement does what the text did (see vibe/db/prepared.py)
        "DB_PREPARE_THRESHOLD": os.environ.get("DB_PREPARE_THRESHOLD", "1"),
    }


@pytest.fixture
async def proxy(database_url):
    """A TCP proxy in front of the test's PostgreSQL that a test can cut and restore."""
    from netproxy import TcpProxy

    parts = urllib.parse.urlsplit(database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    await proxy.close()


class Service:
    """A running app and its test client, with helpers that speak Stripe's protocol."""

    def __init__(self, client, settings: Settings):
        self.client = client
        self.app = client.server.app
        self.settings = settings

    @property
    def db(self):
        return self.app[DB]

    async def post_event(self, event: dict | bytes, *, secret: str = SECRET, timestamp: int | None = None,
                         headers: dict | None = None):
        body, all_headers = signed(event, secret, timestamp)
        all_headers.update(headers or {})
        data = io.BytesIO(body) if len(body) > 256 * 1024 else body  # aiohttp warns on big raw bytes
        return await self.client.post("/functions/v1/stripe-webhook", data=data, headers=all_headers)

    async def deliver(self, *events: dict) -> list[dict]:
        """Post events one by one, expect 200 each, then wait until they are processed."""
        answers = []
        for event in events:
            resp = await self.post_event(event)
            assert resp.status == 200, await resp.text()
            answers.append(await resp.json())
        await self.settle()
        return answers

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no stored event is due for processing. An event waiting for a customer that
        is linked by now counts as due: the transaction that linked it or the one that parked it
        wakes it right after its COMMIT, and the test may look in between."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = await self.db.fetchval(
                "SELECT COUNT(*) FROM stripe_events WHERE (status IN ('pending', 'failed', 'waiting') "
                "AND next_attempt_at <= %s) OR (status = 'waiting' AND waiting_for IN "
                "(SELECT customer_id FROM stripe_customers))", (time.time(),)
            )
            if not due:
                return
            self.app[DISPATCHER].wake()
            await asyncio.sleep(0.02)
        raise AssertionError("stripe events still due after settle timeout")

    async def event_row(self, event_id: str) -> dict:
        return await self.db.fetchone("SELECT * FROM stripe_events WHERE id = %s", (event_id,))

    async def wait_status(self, event_id: str, *statuses: str, timeout: float = 10.0) -> dict:
        """Wait until the event reaches one of `statuses` (retries happen on their own)."""
        async def reached() -> bool:
            row = await self.event_row(event_id)
            return row is not None and row["status"] in statuses

        await wait_until(reached, timeout)
        return await self.event_row(event_id)

    async def user(self, user_id: str) -> dict | None:
        from vibe.users.cli import user_billing

        return await user_billing(self.db, user_id)


class LogsAfterStop(logging.Handler):
    """Whatever is logged once `stopped` is set: a task of a stopped service still at work."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.stopped = False
        self.late: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.stopped:
            self.late.append(f"{record.name} {record.levelname}: {record.getMessage()}")


async def tasks_left(before: set[asyncio.Task], settle: float = 1.0) -> list[asyncio.Task]:
    """Tasks that were not there at `before` and are still running `settle` seconds on."""
    deadline = time.monotonic() + settle
    while True:
        left = [t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)


async def stop_services(clients: list, before: set[asyncio.Task], late: LogsAfterStop) -> None:
    """Stop the services (each app's own shutdown); fail if a task they started is still running
    afterwards, or if anything is logged after the stop."""
    for client in clients:
        await client.close()
    late.stopped = True
    left = await tasks_left(before)
    assert not left, "tasks still running after the services stopped:\n" + "\n".join(map(describe, left))
    await asyncio.sleep(0.05)  # a log call from a loop that ended late would land here
    assert not late.late, "logged after the services stopped:\n" + "\n".join(late.late)


@pytest.fixture
async def start_service(env, aiohttp_client) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """`await start_service(extra_plugins=(...), **env_overrides)` -> Service.

    At the end of the test every service it started stops (the application's own shutdown),
    and the test fails if a task a service started is still running afterwards, or if anything
    is logged after the stop. `env` comes before `aiohttp_client` so that the apps stop before
    the database is dropped.
    """
    services: list[Service] = []
    before = asyncio.all_tasks()
    late = LogsAfterStop()
    logging.getLogger().addHandler(late)

    async def start(*, extra_plugins: tuple = (), **overrides: str) -> Service:
        settings = Settings.from_env({**env, **overrides})
        pm = build_plugin_manager(settings, extra=extra_plugins)
        client = await aiohttp_client(create_app(settings, pm=pm))
        services.append(Service(client, settings))
        return services[-1]

    try:
        yield start
        await stop_services([s.client for s in services], before, late)
    finally:
        logging.getLogger().removeHandler(late)


@pytest.fixture
async def service(start_service) -> Service:
    return await start_service()


async def run_cli(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run `python run.py ARGS` as a user would (without blocking the event loop)."""
    full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "SYSTEMROOT")}
    full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), *args, env=full_env, cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def receiver(aiohttp_server):
    """A webhook receiver on loopback (alerts): the JSON bodies it got, and its URL."""
    received: list[dict] = []

    async def hook(request):
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return received, str(server.make_url("/hook"))
