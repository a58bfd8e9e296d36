"""Analytics events: the endpoint definitions plugins register, and how one event is checked.

An endpoint (`AnalyticsEndpoint`) names its URL segment, the event name it records (or lets the
body name it), who may send it, a `validate(properties) -> properties` function that raises
`EventInvalid` for a bad field, and optionally a `rollup(tx, events)` coroutine that updates the
endpoint's own aggregate table in the transaction that stores the events.

`parse_event` checks the envelope every endpoint shares (message_id, timestamp, sent_at, user_id,
anonymous_id, session_id, properties, context), corrects client clock skew the Segment way,
clamps timestamps in the future, flags bots and, for browser traffic (user and anonymous senders),
records the request's country at `context.location.country` (web.geo) unless the event has one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from typing import Any, Awaitable, Callable, Mapping, Sequence

from vibe.analytics.schemas import ENVELOPE as ENVELOPE_SHAPE
from vibe.analytics.schemas import MAX_BATCH as MAX_BATCH  # re-exported: the names' old home
from vibe.analytics.schemas import EventInvalid as EventInvalid
from vibe.analytics.schemas import check_id as check_id
from vibe.analytics.schemas import check_name as check_name
from vibe.analytics.schemas import check_properties
from vibe.analytics.schemas import choice as choice
from vibe.analytics.schemas import number as number
from vibe.analytics.schemas import text as text
from vibe.db.database import Transaction
from vibe.web.json_body import MAX_DEPTH, nesting_depth
from vibe.web.validation import Field, Shape

MAX_EVENT_BYTES = 32 * 1024
SENDERS = frozenset({"user", "anonymous", "server"})
ENVELOPE = frozenset(ENVELOPE_SHAPE.fields)
# Known crawlers, link unfurlers, monitors, automation and headless browsers, and HTTP libraries.
_BOT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|mediapartners|facebookexternalhit|embedly|bingpreview|"
    r"headless|phantomjs|puppeteer|playwright|selenium|webdriver|lighthouse|pingdom|uptimerobot|"
    r"statuscake|datadog|newrelicpinger|site24x7|gtmetrix|^curl/|^wget/|python-requests|python-urllib|"
    r"aiohttp|go-http-client|okhttp|java/|libwww-perl|httpclient|axios/|node-fetch|^$",
    re.IGNORECASE,
)


Validate = Callable[[dict[str, Any]], dict[str, Any]]
Rollup = Callable[[Transaction, Sequence["Event"]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class AnalyticsEndpoint:
    """`POST /functions/v1/analytics-tracking/{name}`, as a plugin registers it."""

    name: str
    validate: Validate | None = None  # beyond `properties`: cross-field checks, normalising
    event: str | None = None  # the event name recorded; None: the body's `event` field names it
    senders: frozenset[str] = SENDERS  # who may send: user, anonymous, server (write key / service)
    rollup: Rollup | None = None
    # the read API's aggregate (`GET …/aggregates/{name}`, vibe.analytics.queries.ROLLUPS) that
    # `rollup` keeps: the aggregate is available only while a loaded plugin declares it
    aggregate: str | None = None
    description: str = ""
    # the properties' shape: checked before `validate` runs, and shown by /openapi.json. A dict of
    # Fields is an open shape (other properties are kept) where a null counts as not given.
    properties: Shape | Mapping[str, Field] | None = None
    # other event names the body's `event` may give (a regex; subscription-event: the original's
    # subscription_<event_type>): the endpoint still checks and rolls the events up as its own
    other_names: str | None = None

    def records(self, name: Any) -> bool:
        """Whether this endpoint records events named `name` (its own, or one of `other_names`)."""
        return name == self.event or (self.other_names is not None and isinstance(name, str)
                                      and re.fullmatch(self.other_names, name) is not None)

    def check(self, properties: dict[str, Any]) -> dict[str, Any]:
        """The event's properties as this endpoint records them; EventInvalid when refused."""
        if self.properties is not None:
            check_properties(self.properties, properties)
        return self.validate(properties) if self.validate is not None else properties

    def __post_init__(self):
        if self.properties is not None and not isinstance(self.properties, Shape):
            object.__setattr__(self, "properties", Shape(dict(self.properties), closed=False, null_is_absent=True))
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", self.name):
            raise ValueError(f"analytics endpoint name {self.name!r}: lower-case letters, digits and '-'")
        if self.aggregate is not None and self.rollup is None:
            raise ValueError(f"analytics endpoint {self.name}: an aggregate needs the rollup that keeps it")
        if not self.senders or not self.senders <= SENDERS:
            raise ValueError(f"analytics endpoint {self.name}: senders must be a subset of {sorted(SENDERS)}")


@dataclasses.dataclass
class Event:
    """A checked event, ready to store."""

    message_id: str
    endpoint: str
    event: str
    user_id: str | None
    anonymous_id: str | None
    session_id: str | None
    ts: float
    received_at: float
    sent_at: float | None
    properties: dict[str, Any]
    context: dict[str, Any]
    is_bot: bool
    source: str

    @property
    def actor(self) -> str:
        return self.user_id if self.user_id else f"anon:{self.anonymous_id}"

    @property
    def scope(self) -> str:
        """Whose message ids these are (`sender_scope`: message_id is unique per scope, so no sender
        can make another's event a duplicate): `user:<id>` for a signed-in user, `anon:<id>` for an
        anonymous browser, `server` for the write key and the service role, and the source itself
        for events a plugin records (`billing`)."""
        if self.source == "user":
            return f"user:{self.user_id}"
        if self.source == "anonymous":
            return f"anon:{self.anonymous_id}"
        return self.source


@dataclasses.dataclass(frozen=True)
class Sender:
    """Who sent a request: `kind` user|anonymous|server, the user the token names, the browser UA."""

    kind: str
    user_id: str | None = None
    user_agent: str | None = None  # the request's, for user and anonymous traffic
    country: str | None = None  # the request's (web.geo), for user and anonymous traffic


def parse_time(value: Any, field: str) -> float:
    """ISO 8601 (a zone is required, or UTC is assumed) or Unix seconds -> Unix seconds."""
    if isinstance(value, bool):
        raise EventInvalid(field, f"{field} must be an ISO 8601 time or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise EventInvalid(field, f"{field} is not an ISO 8601 time: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        seconds = parsed.timestamp()
    else:
        raise EventInvalid(field, f"{field} must be an ISO 8601 time or Unix seconds")
    if not math.isfinite(seconds) or not 0 <= seconds < 32503680000:  # year 3000
        raise EventInvalid(field, f"{field} is out of range")
    return seconds


def is_bot(user_agent: str | None) -> bool:
    return user_agent is not None and bool(_BOT.search(user_agent.strip()))


def corrected_time(ts: float | None, sent_at: float | None, received_at: float) -> float:
    """Segment's skew correction: `received_at - (sent_at - timestamp)`; never in the future."""
    if ts is None:
        return received_at
    if sent_at is not None:
        ts = received_at - (sent_at - ts)
    return min(ts, received_at)


def parse_event(raw: Any, endpoint: AnalyticsEndpoint, sender: Sender, received_at: float,
                batch_sent_at: float | None = None, *, body_size: int | None = None) -> Event:
    """Check one event of a request; raise EventInvalid naming the field that is wrong.

    `body_size`: the request body's size; when it is within MAX_EVENT_BYTES no event can exceed
    the limit and the per-event size check is skipped."""
    if not isinstance(raw, dict):
        raise EventInvalid("event", "an event must be a JSON object")
    unknown = sorted(set(raw) - ENVELOPE)
    if unknown:
        raise EventInvalid(unknown[0], f"unknown field {unknown[0]!r}; properties go in 'properties'")
    if (body_size is None or body_size > MAX_EVENT_BYTES) and \
            len(json.dumps(raw, separators=(",", ":"))) > MAX_EVENT_BYTES:
        raise EventInvalid("event", f"an event is limited to {MAX_EVENT_BYTES} bytes of JSON")
    if endpoint.event is None:
        name = check_name(raw.get("event"))
    elif raw.get("event") is not None and not endpoint.records(raw["event"]):
        raise EventInvalid("event", f"this endpoint records {endpoint.event!r} events; leave 'event' out")
    else:
        name = endpoint.event if raw.get("event") is None else check_name(raw["event"])
    user_id = check_id(raw.get("user_id"), "user_id")
    anonymous_id = check_id(raw.get("anonymous_id"), "anonymous_id")
    if sender.kind == "user":
        user_id = sender.user_id  # a different user_id was refused for the whole request
    elif sender.kind == "anonymous" and anonymous_id is None:
        raise EventInvalid("anonymous_id",
                           "anonymous_id (or a session_id) is required without a sign-in or a write key")
    if user_id is None and anonymous_id is None:
        raise EventInvalid("user_id", "an event needs a user_id or an anonymous_id")
    for field in ("properties", "context"):
        if raw.get(field) is not None and not isinstance(raw[field], dict):
            raise EventInvalid(field, f"{field} must be a JSON object")
    context = dict(raw.get("context") or {})
    properties = endpoint.check(dict(raw.get("properties") or {}))
    sent_at = parse_time(raw["sent_at"], "sent_at") if raw.get("sent_at") is not None else batch_sent_at
    ts = parse_time(raw["timestamp"], "timestamp") if raw.get("timestamp") is not None else None
    if sender.kind == "server":
        agent = context.get("user_agent", context.get("userAgent"))
        if agent is not None and not isinstance(agent, str):
            raise EventInvalid("context.user_agent", "context.user_agent must be a string")
    else:
        agent = sender.user_agent or ""
        if sender.country:
            located(context, sender.country)
    return Event(
        message_id=check_id(raw.get("message_id"), "message_id") or uuid.uuid4().hex,
        endpoint=endpoint.name, event=name, user_id=user_id, anonymous_id=anonymous_id,
        session_id=check_id(raw.get("session_id"), "session_id"),
        ts=corrected_time(ts, sent_at, received_at), received_at=received_at, sent_at=sent_at,
        properties=properties, context=context, is_bot=is_bot(agent), source=sender.kind,
    )


def located(context: dict[str, Any], country: str) -> None:
    """The request's country at `context.location.country`, where Segment keeps it, unless the
    caller said where already (a `location` that is not an object is left alone)."""
    location = context.get("location")
    if location is None:
        context["location"] = {"country": country}
    elif isinstance(location, dict) and location.get("country") is None:
        context["location"] = {**location, "country": country}


def collect_endpoints(pm, settings) -> dict[str, AnalyticsEndpoint]:
    """Every endpoint the plugins register, by name; a duplicate name is a start-up error."""
    from vibe.plugins.host import PluginError

    found: dict[str, AnalyticsEndpoint] = {}
    for _, result in pm.registered["register_analytics_endpoints"]:
        items = result if isinstance(result, (list, tuple)) else [result]
        for endpoint in items:
            if not isinstance(endpoint, AnalyticsEndpoint):
                raise PluginError(f"register_analytics_endpoints returned {type(endpoint).__name__}, "
                                  "expected AnalyticsEndpoint")
            if endpoint.name in found:
                raise PluginError(f"two plugins register the analytics endpoint {endpoint.name!r}")
            found[endpoint.name] = endpoint
    return found


def event_row(event: Event) -> tuple:
    return (event.message_id, event.endpoint, event.event, event.user_id, event.anonymous_id, event.session_id,
            event.ts, event.received_at, event.sent_at, json.dumps(event.properties, separators=(",", ":")),
            json.dumps(event.context, separators=(",", ":")), event.is_bot, event.source, event.scope)


def stored_json(text: str) -> Any:
    """A stored `properties` or `context` as the journey and the export show it. What ingestion
    refuses today may have been stored before (or by a plugin's own events): a text nested deeper
    than MAX_DEPTH, or that is not JSON, is shown as `{"_unreadable": "too_deep" | "invalid_json",
    "_stored": <the stored text>}`, so one such event neither fails the read nor is lost from it."""
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than the parser's stack
        reason = "too_deep"
    except (ValueError, TypeError):
        reason = "invalid_json"
    else:
        if nesting_depth(value) <= MAX_DEPTH:
            return value
        reason = "too_deep"
    return {"_unreadable": reason, "_stored": text if isinstance(text, str) else repr(text)}


def stored_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the journey and the export show it."""
    return {
        "message_id": row["message_id"], "event": row["event"], "endpoint": row["endpoint"],
        "timestamp": row["ts"], "received_at": row["received_at"], "user_id": row["user_id"],
        "anonymous_id": row["anonymous_id"], "session_id": row["session_id"],
        "properties": stored_json(row["properties"]), "context": stored_json(row["context"]),
        "is_bot": bool(row["is_bot"]),
    }
