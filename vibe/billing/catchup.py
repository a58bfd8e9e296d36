"""Catch-up: the events Stripe has that the inbox lacks, listed from `GET /v1/events` and stored
the way a delivered webhook is.

A platform that was down longer than Stripe's retries, whose endpoint Stripe disabled, or that
refused events with a wrong secret, would drift silently. `catch_up` lists the events created
since a point (at most Stripe's 30 days back; by default the types vibe handles, or
`STRIPE_CATCHUP_TYPES`), page by page, and stores each page with the inbox's own
`store_events`: the same dedupe (`ON CONFLICT (id) DO NOTHING`), then the same dispatcher, with
its ordering guards and handlers. The rows it adds have `source = 'api'`; an event a webhook
delivers afterwards is a duplicate, applied once. No transaction is open while Stripe answers:
each page is fetched first, then stored in one short transaction.

A full pass (every default type) remembers the newest `created` it saw in `stripe_sync_state`;
the next pass starts `OVERLAP` seconds before it, so after a quiet hour a pass is one request.
The service runs a pass at start-up and every `STRIPE_CATCHUP_SECONDS` (`CatchUp`), one instance
at a time: a lease in `stripe_sync_state`, claimed under a PostgreSQL advisory lock (a
transaction-level one, in the short claim: a session lock would hold a connection for the whole
pass). A 429 or an outage (`StripeUnavailable`) ends the pass; the next waits `Retry-After`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from vibe.billing.inbox import parse_event, store_events
from vibe.billing.stripe_api import StripeApi, StripeUnavailable
from vibe.config import Settings
from vibe.db.database import Database, DatabaseUnavailable
from vibe.web.errors import ApiError
from vibe.web.shutdown import wait_event
from vibe.web.times import iso, to_seconds

log = logging.getLogger(__name__)

MAX_AGE = 30 * 86400  # Stripe lists events of the last 30 days
OVERLAP = 300  # a pass re-lists this many seconds before the remembered newest event
PAGE = 100  # Stripe's largest page
TYPES_PER_REQUEST = 20  # Stripe's limit on `types[]`
LEASE_SECONDS = 900.0
STATE = "catchup"
_LOCK_ID = 0x76696210  # "vib" + issue 16: the claim of the catch-up lease
_SINCE = re.compile(r"^(\d+)\s*([smhd])$")


@dataclasses.dataclass
class CatchupResult:
    since: int
    types: list[str]
    listed: int = 0
    new: int = 0
    had: int = 0
    invalid: int = 0
    requests: int = 0
    newest: int | None = None
    cursor_saved: bool = False

    def summary(self) -> str:
        extra = f", invalid {self.invalid}" if self.invalid else ""
        return f"listed {self.listed}, new {self.new}, already had {self.had}{extra}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_since(text: str, now: float | None = None) -> float:
    """`3d`, `12h`, `30m`, `90s`, or an ISO 8601 time (or Unix seconds): a point in the past."""
    now = time.time() if now is None else now
    m = _SINCE.match(text.strip().lower())
    if m:
        return now - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return to_seconds(text)  # ValueError when it is neither


def default_types(handlers: Iterable[str], settings: Settings) -> list[str]:
    return sorted(settings.billing.catchup_types or handlers)


async def read_cursor(db: Database) -> int | None:
    value = await db.fetchval("SELECT value FROM stripe_sync_state WHERE name = %s", (STATE,))
    return int(value) if value not in (None, "") else None


async def _save_cursor(db: Database, newest: int) -> None:
    await db.execute("INSERT INTO stripe_sync_state (name, value, updated_at) VALUES (%s, %s, %s) "
                     "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                     (STATE, str(newest), time.time()))


async def list_pages(api: StripeApi, since: int, types: list[str]) -> AsyncIterator[list[dict]]:
    """The events created since `since`, a page (as Stripe sent it) at a time."""
    for start in range(0, len(types), TYPES_PER_REQUEST):
        params: dict[str, Any] = {"created": {"gte": since}, "limit": PAGE,
                                  "types": types[start:start + TYPES_PER_REQUEST]}
        while True:
            page = await api.call(api.client.v1.events.list_async, params)
            body = page.last_response.data if page.last_response else page.to_dict()
            events = [e for e in body.get("data") or [] if isinstance(e, dict)]
            yield events
            if not body.get("has_more") or not events:
                break
            params = {**params, "starting_after": events[-1]["id"]}


async def store_listed(db: Database, settings: Settings, events: list[dict], source: str = "api") -> tuple[int, int, int]:
    """Store events through the inbox's insert; (new, already had, invalid). One transaction."""
    parsed = []
    invalid = 0
    for event in events:
        try:
            parsed.append(parse_event(json.dumps(event).encode(), settings))
        except ApiError as exc:
            invalid += 1
            log.warning("stripe catch-up: event %s is not one the inbox takes: %s", event.get("id"), exc.message)
    if not parsed:
        return 0, 0, invalid
    async with db.transaction() as tx:
        results = await store_events(tx, parsed)
        new = sorted({r.id for r in results if not r.duplicate})
        if new:
            await tx.execute(f"UPDATE stripe_events SET source = %s WHERE id IN ({', '.join(['%s'] * len(new))})",
                             (source, *new))
    return len(new), len(results) - len(new), invalid


async def catch_up(api: StripeApi, db: Database, settings: Settings, handlers: Iterable[str], *,
                   since: float | None = None, types: list[str] | None = None,
                   progress: Callable[[int], None] | None = None,
                   stopping: Callable[[], bool] = lambda: False) -> CatchupResult:
    """One pass. `since` None: from the remembered cursor (less OVERLAP), else 30 days back."""
    full = types is None
    types = list(types) if types else default_types(handlers, settings)
    cursor = await read_cursor(db)
    now = time.time()
    start = since if since is not None else (cursor - OVERLAP if cursor is not None else now - MAX_AGE)
    start = int(max(start, now - MAX_AGE + 60))
    result = CatchupResult(since=start, types=types)
    async for events in list_pages(api, start, types):
        result.requests += 1
        result.listed += len(events)
        new, had, invalid = await store_listed(db, settings, events)
        result.new, result.had, result.invalid = result.new + new, result.had + had, result.invalid + invalid
        created = [e["created"] for e in events if isinstance(e.get("created"), int)]
        if created:
            result.newest = max(result.newest or 0, *created)
        if progress:
            progress(len(events))
        if stopping():
            return result
    # Only a pass over every type, starting at or before the cursor, may move it.
    if full and result.newest is not None and (cursor is None or start <= cursor) and result.newest > (cursor or 0):
        await _save_cursor(db, result.newest)
        result.cursor_saved = True
    return result


class CatchUp:
    """The service's background catch-up: at start-up, then every STRIPE_CATCHUP_SECONDS."""

    def __init__(self, db: Database, settings: Settings, api: StripeApi, handlers: Iterable[str],
                 wake: Callable[[], None]):
        self.db, self.settings, self.api = db, settings, api
        self.handlers = list(handlers)
        self.wake = wake
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = asyncio.Event()
        self.passes, self.last_at, self.last_result, self.last_error = 0, None, None, None
        self.next_at: float | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            self.next_at = time.time() + delay
            if await wait_event(self._stop, delay):
                return
            delay = self.settings.billing.catchup_seconds
            try:
                await self.pass_once()
            except StripeUnavailable as exc:
                self.last_error = str(exc)
                delay = min(delay, max(exc.retry_after, 1.0))
                log.warning("stripe catch-up: %s; next pass in %.0f s", exc, delay)
            except DatabaseUnavailable as exc:
                self.last_error = f"database unavailable: {exc}"
                delay = min(delay, 30.0)
                log.warning("stripe catch-up: database unavailable (%s); next pass in %.0f s", exc, delay)
            except Exception as exc:  # noqa: BLE001 - reported in /health, tried again next interval
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("stripe catch-up failed; next pass in %.0f s", delay)

    async def pass_once(self) -> CatchupResult | None:
        """A pass, unless another instance holds the lease (then None)."""
        if not await self._claim():
            return None
        try:
            result = await catch_up(self.api, self.db, self.settings, self.handlers, stopping=self._stop.is_set)
        finally:
            await self._release()
        self.passes += 1
        self.last_at, self.last_result, self.last_error = time.time(), result, None
        if result.new:
            log.info("stripe catch-up: %s", result.summary())
            self.wake()
        return result

    async def _claim(self) -> bool:
        now = time.time()
        async with self.db.transaction() as tx:
            if tx.dialect == "postgresql" and not await tx.fetchval("SELECT pg_try_advisory_xact_lock(%s)",
                                                                    (_LOCK_ID,)):
                return False
            await tx.execute("INSERT INTO stripe_sync_state (name, updated_at) VALUES (%s, %s) "
                             "ON CONFLICT (name) DO NOTHING", (STATE, now))
            return bool(await tx.execute(
                "UPDATE stripe_sync_state SET holder = %s, lease_until = %s WHERE name = %s "
                "AND (holder IS NULL OR holder = %s OR lease_until < %s)",
                (self.holder, now + LEASE_SECONDS, STATE, self.holder, now)))

    async def _release(self) -> None:
        await self.db.execute("UPDATE stripe_sync_state SET holder = NULL, lease_until = NULL "
                              "WHERE name = %s AND holder = %s", (STATE, self.holder))

    def snapshot(self) -> dict[str, Any]:
        last = self.last_result
        return {"enabled": True, "interval_seconds": self.settings.billing.catchup_seconds,
                "passes": self.passes, "last_at": iso(self.last_at), "next_at": iso(self.next_at),
                "last": last.summary() if last else None, "last_error": self.last_error}
