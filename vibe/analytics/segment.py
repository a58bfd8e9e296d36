"""The Segment HTTP tracking API (`POST /v1/batch`, `/v1/track`, `/v1/page`, `/v1/identify`, ...),
so every Segment or RudderStack SDK can send to vibe unchanged.

* The write key is the Basic-auth user name, or `writeKey` in the body.
* Bodies may be gzip. `messageId` deduplicates; `sentAt` corrects clock skew.
* 200 `{"success": true, ...}` once the valid messages are committed. A message that is not
  acceptable (say a page with no path) is dropped and listed under `rejected`, and the request is
  still 200: SDKs retry anything else, and a bad message would be retried forever. 400 only for a
  malformed body; 401 for a wrong write key; 503 with Retry-After when the batcher is overloaded
  or the database is down (SDKs back off and retry).

Messages are mapped to the functions' endpoints: `track` to `event`, `page` to `page-view`, and
`identify`, `screen`, `group` and `alias` to `event` with the type as the event name.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from vibe.analytics.ingest import (
    ingest,
    parse_json,
    read_body,
    write_key_matches,
    write_key_refusal,
)
from vibe.analytics.keys import ANALYTICS
from vibe.analytics.model import EventInvalid, Sender, parse_time
from vibe.analytics.schemas import TIME
from vibe.keys import SETTINGS
from vibe.web.errors import ApiError
from vibe.web.validation import Field, Shape, problems_of

TYPES = ("track", "page", "identify", "screen", "group", "alias")
MAX_MESSAGES = 2500
_TEXT, _OBJECT = Field("str", nullable=True), Field("object", nullable=True)
# What the door reads of a message; SDKs send more (integrations, _metadata, ...), which is kept out.
MESSAGE = Shape({
    "type": Field("str", choices=TYPES, description="in a batch; the path names it for a single call"),
    "messageId": _TEXT, "userId": _TEXT, "anonymousId": _TEXT, "event": _TEXT, "name": _TEXT,
    "properties": _OBJECT, "traits": _OBJECT, "context": _OBJECT, "groupId": _TEXT, "previousUserId": _TEXT,
    "timestamp": TIME, "originalTimestamp": TIME, "sentAt": TIME,
}, closed=False, description="a message the door cannot map is listed under `rejected` (the request is still 200)")
BATCH = Shape({
    "batch": Field("list", required=True, max_length=MAX_MESSAGES, items=MESSAGE, check_items=False),
    "sentAt": TIME, "writeKey": Field("str", nullable=True, description="or as the Basic-auth user name"),
    "context": _OBJECT,
}, closed=False)


def basic_user(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_authorization", "The Basic Authorization header is malformed.") from None
    return decoded.partition(":")[0]


def to_event(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A Segment message as (endpoint name, event in the functions' envelope)."""
    kind = msg.get("type")
    properties = dict(msg.get("properties") or {}) if isinstance(msg.get("properties"), dict) else msg.get("properties")
    event: dict[str, Any] = {
        "message_id": msg.get("messageId"), "user_id": msg.get("userId"), "anonymous_id": msg.get("anonymousId"),
        "timestamp": msg.get("timestamp", msg.get("originalTimestamp")), "sent_at": msg.get("sentAt"),
        "context": msg.get("context"),
    }
    if kind == "track":
        return "event", {**event, "event": msg.get("event"), "properties": properties}
    if kind == "page":
        page = ((msg.get("context") or {}).get("page") or {}) if isinstance(msg.get("context"), dict) else {}
        props = properties if isinstance(properties, dict) else {}
        for field in ("path", "url", "title", "referrer"):
            if field not in props and isinstance(page, dict) and page.get(field) is not None:
                props[field] = page[field]
        if msg.get("name") is not None:
            props.setdefault("name", msg["name"])
        return "page-view", {**event, "properties": props}
    extra = {"identify": ("traits",), "group": ("traits", "groupId"), "alias": ("previousUserId",),
             "screen": ("properties", "name")}[kind]
    props = {}
    for field in extra:
        value = msg.get(field)
        if isinstance(value, dict):
            props.update(value)
        elif value is not None:
            props[field] = value
    return "event", {**event, "event": kind, "properties": props}


async def batch(request: web.Request) -> web.Response:
    raw_body = await read_body(request)
    body = parse_json(raw_body)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    single = request.match_info.get("type")
    if single:
        messages = [{**body, "type": single}]
    else:
        messages = body.get("batch")
        if problems_of(messages, BATCH.fields["batch"], "batch"):
            raise ApiError(400, "invalid_batch", f"'batch' must be a list of at most {MAX_MESSAGES} messages.")
    key = basic_user(request.headers.get("Authorization")) or body.get("writeKey")
    if not isinstance(key, str) or not write_key_matches(request.app[SETTINGS], key):
        configured = bool(request.app[SETTINGS].analytics.write_key)
        raise ApiError(401, "invalid_write_key", "Send the write key as the Basic-auth user or as writeKey."
                       if configured else write_key_refusal(request.app[SETTINGS], "A write key"))
    try:
        sent_at = parse_time(body["sentAt"], "sentAt") if body.get("sentAt") is not None else None
    except EventInvalid as exc:
        raise ApiError(400, "invalid_body", exc.message) from None
    endpoints = request.app[ANALYTICS].endpoints
    items: list[tuple[int, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("type") not in TYPES:
            rejected.append({"index": index, "field": "type", "message": f"type must be one of {', '.join(TYPES)}"})
            continue
        name, event = to_event(msg)
        if name not in endpoints:
            rejected.append({"index": index, "field": "type", "message": f"no {name!r} endpoint is installed"})
            continue
        items.append((index, (endpoints[name], {k: v for k, v in event.items() if v is not None})))
    counts = {"accepted": 0, "duplicate": 0}
    results, _ = await ingest(request, [item for _, item in items], Sender("server"), sent_at, len(raw_body))
    for (index, _), result in zip(items, results):
        if result["status"] == "rejected":
            rejected.append({"index": index, "field": result["field"], "message": result["message"]})
        else:
            counts[result["status"]] += 1
    return web.json_response({"success": True, **counts, "rejected": sorted(rejected, key=lambda r: r["index"])})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/batch", batch)
    app.router.add_post("/v1/import", batch)
    for kind in TYPES:
        app.router.add_post(f"/v1/{{type:{kind}}}", batch)
