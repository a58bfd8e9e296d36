"""The Stripe inbox: verified events stored raw and exactly once, before anything acts on them.

`parse_event` checks the envelope (cheap, before any write); `store_events` is the group-commit
flush: one multi-row `INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id` per batch, which tells
each delivery whether it was new or a duplicate, also when two copies race each other.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from vibe.config import Settings
from vibe.db.database import Transaction, any_of, rows_source, safe_text
from vibe.web.errors import ApiError
from vibe.web.json_body import load_json

MAX_ID_LENGTH = 255
COLUMNS = (
    "id", "type", "created", "livemode", "account", "api_version", "object_id", "payload",
    "received_at", "status", "next_attempt_at", "note",
)


@dataclasses.dataclass(frozen=True)
class InboxEvent:
    id: str
    type: str
    created: int
    livemode: bool
    account: str | None
    api_version: str | None
    object_id: str | None
    payload: str
    received_at: float
    status: str  # "pending", or "skipped" when STRIPE_LIVEMODE filters it out
    note: str | None = None
    body: dict | None = dataclasses.field(default=None, compare=False, repr=False)  # `payload`, parsed

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.type, self.created, self.livemode, self.account, self.api_version,
                self.object_id, self.payload, self.received_at, self.status,
                self.received_at if self.status == "pending" else None, self.note)


@dataclasses.dataclass(frozen=True)
class StoreResult:
    id: str
    duplicate: bool
    status: str


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_event", message)


def parse_event(body: bytes, settings: Settings, received_at: float | None = None) -> InboxEvent:
    """Validate a verified body as a Stripe event envelope; raise ApiError(400) if it is not one.

    The body must be UTF-8 JSON nested at most vibe.web.json_body.MAX_DEPTH deep (400
    `invalid_json`, `too_deep`): so the raw text kept in `payload` holds no NUL and no lone
    surrogate (JSON escapes them, `\u0000`), and is stored byte for byte. The id and the type,
    which key the row, must be text a database can hold (400 otherwise); other strings of the
    event reach the database through the bind layer's replacement (vibe.db.database.safe_text)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The body is not UTF-8 encoded JSON.") from None
    event = load_json(text, "The event")
    if not isinstance(event, dict):
        raise _invalid("The body must be a JSON object (a Stripe event).")
    problems = []
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
        problems.append("id: a string of 1 to 255 characters is required")
    elif safe_text(event_id) != event_id:
        problems.append("id: must not contain NUL or unpaired surrogate characters")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        problems.append("type: a string is required")
    elif safe_text(event_type) != event_type:
        problems.append("type: must not contain NUL or unpaired surrogate characters")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        problems.append("created: a Unix timestamp (integer) is required")
    if event.get("object", "event") != "event":
        problems.append("object: must be 'event'")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        problems.append("data.object: an object is required")
    livemode = event.get("livemode", False)
    if not isinstance(livemode, bool):
        problems.append("livemode: must be true or false")
    account = event.get("account")
    if account is not None and not isinstance(account, str):
        problems.append("account: must be a string")
    api_version = event.get("api_version")
    if api_version is not None and not isinstance(api_version, str):
        problems.append("api_version: must be a string")
    if problems:
        raise ApiError(400, "invalid_event", "The body is not a valid Stripe event.", details=problems)
    object_id = data["object"].get("id")
    status, note = "pending", None
    wanted = settings.billing.livemode
    if wanted != "any" and livemode != (wanted == "live"):
        status, note = "skipped", f"livemode={str(livemode).lower()} filtered by STRIPE_LIVEMODE={wanted}"
    return InboxEvent(
        id=event_id, type=event_type, created=created, livemode=livemode, account=account,
        api_version=api_version, object_id=object_id if isinstance(object_id, str) else None,
        payload=text, received_at=time.time() if received_at is None else received_at,
        status=status, note=note, body=event,
    )


async def store_events(tx: Transaction, events: Sequence[InboxEvent]) -> list[StoreResult]:
    """Insert a batch; the first copy of an id is new, every other copy is a duplicate."""
    first: dict[str, InboxEvent] = {}
    for event in events:
        first.setdefault(event.id, event)
    # In id order: two transactions inserting overlapping ids (copies of one event delivered to
    # two instances) then wait on each other in one order instead of deadlocking.
    unique = sorted(first.values(), key=lambda e: e.id)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(COLUMNS)) + ")"] * len(unique))
    params = [value for event in unique for value in event.row()]
    rows = await tx.fetchall(
        f"INSERT INTO stripe_events ({', '.join(COLUMNS)}) VALUES {placeholders} "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        params,
    )
    inserted = {row["id"] for row in rows}
    results, seen = [], set()
    for event in events:
        new = event.id in inserted and event.id not in seen
        seen.add(event.id)
        results.append(StoreResult(event.id, duplicate=not new, status=event.status if new else "duplicate"))
    return results


# The dispatcher's reads and writes of an event's row (vibe/billing/dispatcher.py).
async def claim_one(tx: Transaction, event_id: str) -> dict[str, Any] | None:
    """The event's row, locked, if it is still due. It waits for the lock (not SKIP LOCKED):
    another loop's batch holding it ends soon, and then this one sees what it left."""
    return await tx.fetchone(
        f"SELECT {CLAIM_COLUMNS} FROM stripe_events WHERE id = %s "
        "AND status IN ('pending', 'failed', 'waiting') AND next_attempt_at <= %s FOR UPDATE",
        (event_id, time.time()))


def stored_event(row: dict[str, Any]) -> dict | None:
    """A claimed row's body, parsed; None when it does not parse (the event fails as it runs)."""
    try:
        event = load_json(row["payload"], "The stored event")
    except ApiError:
        return None
    return event if isinstance(event, dict) else None


CLAIM_KEYS = "id, type, created, status, attempts, received_at"  # a batch's claim: the door parsed the bodies
CLAIM_COLUMNS = f"{CLAIM_KEYS}, payload"


async def stored_payloads(tx: Transaction, event_ids: Sequence[str]) -> dict[str, str]:
    """The stored bodies of claimed events whose parsed body this process no longer holds."""
    where, params = any_of(tx, "id", event_ids)
    rows = await tx.fetchall(f"SELECT id, payload FROM stripe_events WHERE {where}", params)
    return {row["id"]: row["payload"] for row in rows}


_STATUS_COLUMNS = ("status", "attempts", "next_attempt_at", "waiting_for", "last_error", "note", "processed_at", "id")
_UPDATE = f"UPDATE stripe_events SET {', '.join(f'{c} = %s' for c in _STATUS_COLUMNS[:-1])} WHERE id = %s"


def defer_status_updates(tx: Transaction, updates: list[tuple]) -> None:
    """The batch's status updates, sent with COMMIT: on PostgreSQL one statement for the whole
    batch (its rows as one JSON parameter), on SQLite one cheap local statement per event."""
    if tx.dialect != "postgresql" or len(updates) == 1:
        for update in updates:
            tx.defer(_UPDATE, update)
        return
    source, params = rows_source(tx, "stripe_events", _STATUS_COLUMNS, updates)
    tx.defer(f"UPDATE stripe_events AS e SET {', '.join(f'{c} = v.{c}' for c in _STATUS_COLUMNS[:-1])} "
             f"FROM ({source}) AS v WHERE e.id = v.id", params)
