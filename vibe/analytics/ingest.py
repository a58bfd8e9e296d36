"""Ingestion shared by both doors: reading a body, who sent it, and storing events once durable.

`AnalyticsState` (under the ANALYTICS AppKey) holds the registered endpoints, the cache
generations and the group committer; `ingest` checks events and answers only after their COMMIT.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from typing import Any, AsyncIterator, Callable, Sequence

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from vibe.analytics.keys import ANALYTICS
from vibe.analytics.model import (
    AnalyticsEndpoint,
    Event,
    EventInvalid,
    Sender,
    parse_event,
)
from vibe.analytics.store import SeenActors, store_events
from vibe.db.database import Transaction
from vibe.db.groupcommit import GroupCommitter
from vibe.keys import DB, SETTINGS, SHUTDOWN
from vibe.users.caches import DatabaseQueryCache
from vibe.web.auth import principal_of
from vibe.web.errors import ApiError
from vibe.web.json_body import load_json

MAX_BODY = 500 * 1024


@dataclasses.dataclass
class AnalyticsState:
    """Answers are cached in the shared DatabaseQueryCache under keys that carry a generation per
    tag (`events`, `business`): a write bumps the generation (O(1) on the hot path) and the old
    entries are never read again and age out; a read computed before a write is stored under
    the old generation, so it can never be served after that write was acknowledged."""

    endpoints: dict[str, AnalyticsEndpoint]
    cache: DatabaseQueryCache
    committer: GroupCommitter | None = None
    generations: dict[str, int] = dataclasses.field(default_factory=lambda: {"events": 0, "business": 0})
    seen: SeenActors = dataclasses.field(default_factory=SeenActors)

    def cache_key(self, tag: str, *parts: Any) -> tuple:
        return ("analytics", tag, self.generations[tag], *parts)

    def invalidate(self, tag: str) -> None:
        self.generations[tag] += 1

    def clear_cache(self) -> None:
        """After an erasure: drop every cached analytics answer at once, and the actor rows known
        to exist."""
        for tag in self.generations:
            self.generations[tag] += 1
        self.cache.invalidate(("analytics",))
        self.seen.clear()

    async def flush(self, tx: Transaction, requests: Sequence[list[Event]]) -> list[tuple[list[str], set]]:
        """One group-commit transaction: each request gets its statuses and the actor keys written
        (one set shared by the batch, marked as seen by the first request to resume after COMMIT)."""
        written: set[tuple] = set()
        statuses = await store_events(tx, [e for events in requests for e in events], self.endpoints,
                                      self.seen, written)
        out, start = [], 0
        for events in requests:
            out.append((statuses[start:start + len(events)], written))
            start += len(events)
        return out

    async def submit(self, events: list[Event], max_queue: int) -> list[str]:
        """Store `events` in the next group commit; return once committed. Back-pressure: 503 when
        more than `max_queue` events would be waiting (a request is always taken into an empty queue)."""
        if self.committer is None:
            raise ApiError(503, "unavailable", "The service is starting or stopping.", headers={"Retry-After": "1"})
        if self.committer.pending and self.committer.pending + len(events) > max_queue:
            raise ApiError(503, "analytics_overloaded", "Too many events are waiting to be stored; retry shortly.",
                           headers={"Retry-After": "1"})
        statuses, written = await self.committer.submit(events)
        if written:  # committed: these actor rows exist now
            self.seen.mark(written)
            written.clear()
        self.invalidate("events")
        return statuses


async def committer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, state = app[SETTINGS], app[ANALYTICS]
    concurrency = settings.analytics.commit_concurrency or (4 if settings.db.dialect == "postgresql" else 1)
    state.committer = GroupCommitter(
        app[DB], state.flush, max_batch=settings.analytics.batch_events,
        max_wait=settings.analytics.batch_wait_ms / 1000, concurrency=concurrency, name="analytics",
        weight=len,
    )
    try:
        yield
    finally:
        committer, state.committer = state.committer, None
        await app[SHUTDOWN].stop("analytics batcher", committer.stop())


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The request body, at most `limit` bytes. aiohttp inflates `Content-Encoding: gzip` (and
    deflate, br) as it reads, so the limit applies to the uncompressed size: no gzip bombs."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"Request bodies are limited to {limit} bytes.")
    chunks, size = [], 0
    try:
        while chunk := await request.content.read(65536):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "payload_too_large", f"Request bodies are limited to {limit} bytes uncompressed.")
            chunks.append(chunk)
    except RequestPayloadError:
        raise ApiError(400, "invalid_encoding", "The body does not match its Content-Encoding.") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON, for both doors: 400 `invalid_json` when it is not JSON, 400 `too_deep`
    when it nests objects and arrays more than MAX_DEPTH (32) deep (vibe.web.json_body), so no
    event stored can make a later read (a journey, the cache's size estimate) fail."""
    return load_json(body, "The body")


def write_key_matches(settings, key: str) -> bool:
    return bool(settings.analytics.write_key) and hmac.compare_digest(key.encode(), settings.analytics.write_key.encode())


def write_key_refusal(settings, sent: str) -> str:
    """Why a write key (`sent` names where it came) is refused: wrong, or none is configured."""
    if not settings.analytics.write_key:
        return (f"{sent} is not accepted: this service has no ANALYTICS_WRITE_KEY. Send a service-role or "
                "user token (Authorization: Bearer) instead, or ask its operator to set ANALYTICS_WRITE_KEY.")
    return f"{sent} does not match ANALYTICS_WRITE_KEY."


async def sender_of(request: web.Request) -> Sender:
    """Write key (X-Write-Key) or service token: server; user token: that user; else anonymous."""
    key = request.headers.get("X-Write-Key")
    if key is not None:
        if not write_key_matches(request.app[SETTINGS], key):
            raise ApiError(401, "invalid_write_key", write_key_refusal(request.app[SETTINGS], "The X-Write-Key header"))
        return Sender("server")
    principal = await principal_of(request)
    if principal.role == "service":
        return Sender("server")
    agent = request.headers.get("User-Agent", "")
    if principal.role in ("user", "admin"):
        return Sender("user", user_id=principal.user_id, user_agent=agent)
    return Sender("anonymous", user_agent=agent)


async def ingest(request: web.Request, items: Sequence[tuple[AnalyticsEndpoint, Any]], sender: Sender,
                 batch_sent_at: float | None, body_size: int,
                 adapt: Callable[[AnalyticsEndpoint, Any, Sender], Any] | None = None,
                 ) -> tuple[list[dict[str, Any]], int]:
    """Check every (endpoint, event), first mapped by `adapt` when given (the functions door:
    vibe.analytics.contract); store the valid ones in one transaction; return a result per event
    and how many were valid."""
    state, settings = request.app[ANALYTICS], request.app[SETTINGS]
    received_at = time.time()
    results: list[dict[str, Any]] = []
    valid: list[Event] = []
    for index, (endpoint, raw) in enumerate(items):
        try:
            if adapt is not None:
                raw = adapt(endpoint, raw, sender)
            event = parse_event(raw, endpoint, sender, received_at, batch_sent_at, body_size=body_size)
        except EventInvalid as exc:
            results.append({"index": index, "status": "rejected", "field": exc.field, "message": exc.message})
            continue
        valid.append(event)
        results.append({"index": index, "status": "pending", "message_id": event.message_id})
    statuses = iter(await state.submit(valid, settings.analytics.max_queue) if valid else ())
    for result in results:
        if result["status"] == "pending":
            result["status"] = next(statuses)
    return results, len(valid)


