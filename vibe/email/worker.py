"""The email worker: claims queued messages, sends them with bounded concurrency, records results.

Claiming marks rows `sending` with a lease (`claimed_at`) in one short transaction (`FOR UPDATE
SKIP LOCKED` on PostgreSQL, so several instances share the queue); a row whose lease expired
(its process died mid-send) is claimed again; then the due ones by priority (`urgent` and
`send_immediately` first) and, within one, the longest waiting. Results are written through a
group committer, many per transaction. A transient failure is retried with exponential backoff
and full jitter (never sooner than a `Retry-After`); a permanent one, or the
EMAIL_MAX_ATTEMPTS-th failure, makes the message `dead`. Any other exception a send raises (a
header that cannot be built, a bug) counts as an attempt too: retried, then `dead`, so no
message stays `sending` to be claimed again at every lease. A recipient that is not one plain
address is `dead` at once. The sender's circuit breaker stops claiming while the provider is
down and lets one probe through after EMAIL_BREAKER_RESET_SECONDS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

from vibe.config import Settings
from vibe.db.database import Database, DatabaseUnavailable, Transaction
from vibe.db.groupcommit import GroupCommitter
from vibe.email.queue import address_problem, record_event
from vibe.email.recipients import ADMIN
from vibe.email.senders import Outgoing, SendError
from vibe.email.templates import EmailRenderer
from vibe.email.unsubscribe import UnsubscribeLinks
from vibe.ops.resilience import HALF_OPEN, OPEN, CircuitBreaker, backoff_delay
from vibe.web.shutdown import wait_event
from vibe.web.validation import UNSTORABLE

log = logging.getLogger(__name__)

CLAIM_COLUMNS = "id, idempotency_key, user_id, recipient, type, category, data, attempts, message_id"


@dataclasses.dataclass
class Outcome:
    id: int
    claimed_at: float
    status: str  # sent | failed | dead | queued (handed back unsent)
    attempts: int
    error: str | None = None
    next_attempt_at: float | None = None
    provider_id: str | None = None
    at: float = dataclasses.field(default_factory=time.time)

    def __post_init__(self):  # an exception's text may quote what no database text can hold
        self.error = UNSTORABLE.sub("\ufffd", self.error) if self.error else self.error
        self.provider_id = UNSTORABLE.sub("\ufffd", self.provider_id) if self.provider_id else self.provider_id


class EmailWorker:
    def __init__(self, db: Database, settings: Settings, renderer: EmailRenderer, sender: Any,
                 breaker: CircuitBreaker, links: UnsubscribeLinks):
        self.db = db
        self.settings = settings
        self.renderer = renderer
        self.sender = sender
        self.breaker = breaker
        self.links = links
        self.concurrency = settings.email.concurrency
        self.capacity = settings.email.concurrency * 16  # claimed ahead, so a claim serves many sends
        self.results = GroupCommitter(db, self._write_results, max_batch=500, name="email-results")
        self._sem = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.counts = {"sent": 0, "failed": 0, "dead": 0, "queued": 0}

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """The background loop; on stop, waits for the sends in flight and records them."""
        failures = 0
        try:
            while not self._stopping:
                try:
                    claimed = await self.fill()
                    failures = 0
                except DatabaseUnavailable as exc:
                    failures += 1
                    claimed = 0
                    log.warning("email worker: database unavailable (%s)", exc)
                    await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                except Exception:
                    claimed = 0
                    log.exception("email worker: unexpected error; continuing")
                    await asyncio.sleep(1.0)
                if claimed and len(self._tasks) < self.capacity:
                    continue
                wait = self.settings.email.poll_seconds
                if self.breaker.state == OPEN:
                    wait = max(0.01, min(wait, self.breaker.retry_in()))
                await wait_event(self._wake, wait)
                self._wake.clear()
        finally:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.results.close()

    async def fill(self) -> int:
        """Claim as many due messages as there is room for; start a task for each."""
        room = self.capacity - len(self._tasks)
        state = self.breaker.state
        if room <= 0 or state == OPEN or (state == HALF_OPEN and self._tasks):
            return 0
        rows = await self.claim(1 if state == HALF_OPEN else room)
        for row in rows:
            task = asyncio.create_task(self._handle(row), name=f"email-{row['id']}")
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("email worker: a send task failed", exc_info=task.exception())
        self._wake.set()

    async def claim(self, limit: int) -> list[dict[str, Any]]:
        now = time.time()
        async with self.db.transaction() as tx:
            # Leases that expired (their process died mid-send) first; then what is due, the most
            # urgent first (priority: 0 urgent ... 3 low; the index email_messages_due serves it).
            rows = await tx.fetchall(
                f"SELECT {CLAIM_COLUMNS} FROM email_messages WHERE status = 'sending' AND claimed_at < %s "
                "ORDER BY claimed_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now - self.settings.email.lease_seconds, limit),
            )
            if len(rows) < limit:
                rows += await tx.fetchall(
                    f"SELECT {CLAIM_COLUMNS} FROM email_messages WHERE status IN ('queued', 'failed') "
                    "AND next_attempt_at <= %s ORDER BY priority, next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (now, limit - len(rows)),
                )
            if not rows:
                return []
            await tx.execute(
                "UPDATE email_messages SET status = 'sending', claimed_at = %s, updated_at = %s "
                f"WHERE id IN ({', '.join(['%s'] * len(rows))})",
                (now, now, *(r["id"] for r in rows)),
            )
            for r in rows:
                record_event(tx, r["id"], "sending", f"attempt {int(r['attempts']) + 1}", now)
            names = await self._names(tx, {r["user_id"] for r in rows if r["user_id"]})
        for row in rows:
            row["claimed_at"] = now
            row["profile"] = names.get(row["user_id"], {"email": row["recipient"]})
        return rows

    async def _names(self, tx: Transaction, user_ids: set[str]) -> dict[str, dict]:
        if not user_ids:
            return {}
        found = await tx.fetchall(
            "SELECT id, email, full_name, display_name, locale FROM profiles "
            f"WHERE id IN ({', '.join(['%s'] * len(user_ids))})",
            tuple(user_ids),
        )
        return {r["id"]: r for r in found}

    async def _handle(self, row: dict[str, Any]) -> None:
        async with self._sem:
            outcome = await self.deliver(row)
        self.counts[outcome.status] += 1
        await self.results.submit(outcome)

    def compose(self, row: dict[str, Any]) -> Outgoing:
        template = self.renderer.templates[row["type"]]
        unsubscribe = None
        headers: dict[str, str] = {}
        if row["category"] != "transactional" and row["user_id"] not in (None, ADMIN):  # the admin: no link
            unsubscribe = self.links.url(row["user_id"], row["category"])
            headers = self.links.headers(row["user_id"], row["category"])
        context = self.renderer.context(template, json.loads(row["data"]), recipient=row["profile"],
                                        unsubscribe_url=unsubscribe)
        rendered = self.renderer.render(row["type"], context)
        if rendered.locale:
            headers = {**headers, "Content-Language": rendered.locale}
        return Outgoing(id=row["id"], message_id=row["message_id"], sender=self.settings.email.sender,
                        to=row["recipient"], subject=rendered.subject, html=rendered.html, text=rendered.text,
                        idempotency_key=f"vibe-email-{row['id']}", type=row["type"], headers=headers)

    async def deliver(self, row: dict[str, Any]) -> Outcome:
        attempts = int(row["attempts"]) + 1
        base = dict(id=row["id"], claimed_at=row["claimed_at"], attempts=attempts)
        if self._stopping:
            return Outcome(**{**base, "attempts": attempts - 1}, status="queued", next_attempt_at=time.time(),
                           error="shutting down before sending")
        problem = address_problem(row["recipient"])
        if problem:  # queued before addresses were checked at the door
            return Outcome(**base, status="dead", error=f"recipient: {problem}"[:2000])
        try:
            message = self.compose(row)
        except Exception as exc:  # noqa: BLE001 - rendering is the same every time: no retry does better
            return Outcome(**base, status="dead", error=f"cannot render: {type(exc).__name__}: {exc}"[:2000])
        if not self.breaker.allow():
            return Outcome(**{**base, "attempts": attempts - 1}, status="queued",
                           next_attempt_at=time.time() + self.breaker.retry_in(), error="circuit breaker open")
        try:
            async with asyncio.timeout(self.settings.email.send_timeout_seconds):  # see shutdown.wait_event
                provider_id = await self.sender.send(message)
        except (SendError, asyncio.TimeoutError, OSError) as exc:
            transient = getattr(exc, "transient", True)
            error = str(exc) or type(exc).__name__
            if transient:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the provider answered: it is up, this message is refused
            return self._failed(row, base, attempts, error, transient, getattr(exc, "retry_after", None))
        except Exception as exc:  # noqa: BLE001 - not the provider's answer: this message's fault, or ours
            if self.breaker.state == HALF_OPEN:  # it was the probe: let the next one through later
                self.breaker.record_failure()
            return self._failed(row, base, attempts, f"{type(exc).__name__}: {exc}", True, None, exc)
        self.breaker.record_success()
        return Outcome(**base, status="sent", provider_id=provider_id)

    def _failed(self, row: dict[str, Any], base: dict, attempts: int, error: str, transient: bool,
                retry_after: float | None, unexpected: BaseException | None = None) -> Outcome:
        """A failed attempt: `failed` with a retry due after the backoff, or `dead` when it was
        permanent or the last one allowed. An unexpected exception's traceback is logged once,
        when the message dies."""
        if not transient or attempts >= self.settings.email.max_attempts:
            log.error("email %s dead after %d attempt(s): %s", row["id"], attempts, error, exc_info=unexpected)
            return Outcome(**base, status="dead", error=error[:2000])
        delay = backoff_delay(attempts, base=self.settings.email.retry_base_seconds,
                              cap=self.settings.email.retry_max_seconds, retry_after=retry_after)
        log.warning("email %s failed (attempt %d, retry in %.1fs): %s", row["id"], attempts, delay, error)
        return Outcome(**base, status="failed", error=error[:2000], next_attempt_at=time.time() + delay)

    async def _write_results(self, tx: Transaction, outcomes: list[Outcome]) -> list[None]:
        """Each outcome's status, and a history line for it, unless the message's lease expired
        and another claim owns the row now. PostgreSQL: one statement for the whole batch."""
        if tx.dialect == "postgresql":
            rows = [{"id": o.id, "claimed_at": o.claimed_at, "status": o.status, "attempts": o.attempts,
                     "next_attempt_at": o.next_attempt_at, "last_error": o.error, "provider_id": o.provider_id,
                     "sent_at": o.at if o.status == "sent" else None, "at": o.at, "detail": _detail(o)}
                    for o in outcomes]
            await tx.execute(
                "WITH v AS (SELECT * FROM json_to_recordset(%s::json) AS v(id BIGINT, claimed_at DOUBLE PRECISION, "
                "status TEXT, attempts INTEGER, next_attempt_at DOUBLE PRECISION, last_error TEXT, provider_id TEXT, "
                "sent_at DOUBLE PRECISION, at DOUBLE PRECISION, detail TEXT)), "
                "updated AS (UPDATE email_messages AS m SET status = v.status, attempts = v.attempts, "
                "next_attempt_at = v.next_attempt_at, last_error = v.last_error, "
                "provider_id = COALESCE(v.provider_id, m.provider_id), sent_at = v.sent_at, updated_at = v.at, "
                "claimed_at = NULL FROM v WHERE m.id = v.id AND m.status = 'sending' AND m.claimed_at = v.claimed_at "
                "RETURNING m.id, v.status, v.detail, v.at) "
                "INSERT INTO email_message_events (email_id, status, detail, at) "
                "SELECT id, status, detail, at FROM updated ORDER BY id",
                (json.dumps(rows),),
            )
            return [None] * len(outcomes)
        for o in outcomes:
            updated = await tx.execute(
                "UPDATE email_messages SET status = %s, attempts = %s, next_attempt_at = %s, last_error = %s, "
                "provider_id = COALESCE(%s, provider_id), sent_at = %s, updated_at = %s, claimed_at = NULL "
                "WHERE id = %s AND status = 'sending' AND claimed_at = %s",
                (o.status, o.attempts, o.next_attempt_at, o.error, o.provider_id,
                 o.at if o.status == "sent" else None, o.at, o.id, o.claimed_at),
            )
            if updated:  # else the lease expired and another claim owns the row now
                record_event(tx, o.id, o.status, _detail(o), o.at)
        return [None] * len(outcomes)


def _detail(outcome: Outcome) -> str | None:
    """The history line's detail: the error, else the provider's id for the message."""
    return outcome.error or (f"provider id {outcome.provider_id}" if outcome.provider_id else None)
