"""The email function's HTTP layer.

    POST /functions/v1/email-notifications           queue one message (service role or admin)
                                                     (the platform's body: user_id, type, data,
                                                     priority, send_immediately; answers its
                                                     `success`, `message`, `priority` too)
    GET  /functions/v1/email-notifications/{id}      its status and history (admin, service, or its user)
    POST /functions/v1/email-notifications/events    Resend's delivery webhooks (Svix-signed)

Queueing goes through a group committer: concurrent requests share one transaction, and each
is answered only after its message is committed ("2xx means committed").
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Sequence

import jinja2
from aiohttp import web

from vibe.db.database import Transaction
from vibe.email import svix
from vibe.email.intake import (
    MAX_FREE_DEPTH,
    NORMAL,
    PRIORITIES,
    aliases,
    data_problems,
    find_template,
    priority_name,
    rank,
)
from vibe.email.keys import EMAIL_QUEUE, EMAIL_RENDERER, EMAIL_WORKER
from vibe.email.queue import (
    EmailRejected,
    enqueue,
    message_with_history,
    record_event,
    set_status,
    suppress,
)
from vibe.email.recipients import ADMIN, NO_ADMIN_EMAIL, address_problem
from vibe.email.templates import allows_http
from vibe.keys import DB, SETTINGS
from vibe.web.auth import require
from vibe.web.errors import ApiError
from vibe.web.json_body import check_depth, load_json
from vibe.web.times import all_iso, with_iso
from vibe.web.validation import Field, Problems, Shape

BASE = "/functions/v1/email-notifications"
MAX_BODY = 64 * 1024
# Resend webhook type -> the status it moves a message to (None: history only).
DELIVERY = {"email.sent": "sent", "email.delivered": "delivered", "email.bounced": "bounced",
            "email.complained": "complained", "email.delivery_delayed": None, "email.opened": None,
            "email.clicked": None, "email.failed": None}
RANK = {"sending": 0, "sent": 1, "delivered": 2, "bounced": 3, "complained": 3}


@dataclasses.dataclass(frozen=True)
class QueueRequest:
    user_id: str
    type: str
    data: dict
    idempotency_key: str
    priority: int = NORMAL  # a rank (vibe.email.intake.PRIORITIES)


def make_flush(templates, sender: str, http: bool = False, admin_email: str = ""):
    """The group committer's flush. `enqueue` refuses before it writes, so a refused request
    leaves nothing behind and the others in the batch commit."""

    async def flush(tx: Transaction, items: Sequence[QueueRequest]) -> list[Any]:
        now = time.time()
        out: list[Any] = []
        for item in items:
            try:
                out.append(await enqueue(tx, templates, user_id=item.user_id, type=item.type, data=item.data,
                                         idempotency_key=item.idempotency_key, sender=sender, now=now, http=http,
                                         priority=item.priority, admin_email=admin_email))
            except EmailRejected as exc:
                out.append(exc)
        return out

    return flush


async def _json_object(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY} bytes.")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY} bytes.")
    body = load_json(raw)  # 400 invalid_json, or too_deep past MAX_DEPTH
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


QUEUE = Shape({
    "user_id": Field("str", required=True, min_length=1, max_length=128, strip=False, test=str.isprintable,
                     pattern=r"[^\x00-\x1f\x7f-\x9f]*",  # what a schema can say of "printable"
                     message="must be printable characters", description="the recipient, or 'admin'"),
    "type": Field("str", required=True, min_length=1, strip=False,
                  description="the email template's name, or one of its aliases"),
    "data": Field("object", nullable=True, description="what the template takes; other keys are kept "
                  f"for the template (JSON nested at most {MAX_FREE_DEPTH} deep)"),
    "priority": Field("str", nullable=True, choices=PRIORITIES, description="the queue's order (default normal)"),
    "send_immediately": Field("bool", nullable=True, description="true: before everything queued (as urgent)"),
    "idempotency_key": Field("str", nullable=True, pattern=r"[\x21-\x7e]{1,200}", strip=False,
                             description="1 to 200 printable ASCII characters without spaces"),
})


def parse_queue_request(body: dict) -> QueueRequest:
    problems = Problems()
    clean = QUEUE.collect(body, problems, where="")
    if problems.found:
        details = [f"{p.field}: {p.message}" for p in problems.found]
        raise ApiError(400, "invalid_request", "The request body is not valid.", details=details)
    key = clean.get("idempotency_key")
    return QueueRequest(clean["user_id"], clean["type"], clean.get("data") or {},
                        f"api:{key}" if key else f"api:{uuid.uuid4()}",
                        rank(clean.get("priority"), bool(clean.get("send_immediately"))))


def body_schema(templates) -> dict:
    """The queue request for each template (`type` names it), for /openapi.json."""
    bodies = []
    for name, template in sorted(templates.items()):
        schema = QUEUE.schema()
        names = [name, *template.aliases]
        data = {**template.data.schema(), "additionalProperties": True}  # other keys are kept (intake.py)
        schema["properties"].update(type={"const": name} if len(names) == 1 else {"enum": names}, data=data)
        if any(f.required for f in template.data.fields.values()):
            schema["required"].append("data")
        aka = f" Also named {', '.join(template.aliases)}." if template.aliases else ""
        bodies.append({**schema, "title": name, "description": template.description + aka})
    return {"oneOf": bodies} if bodies else QUEUE.schema()


async def queue_email(request: web.Request) -> web.Response:
    await require(request, "admin", "service")
    item = parse_queue_request(await _json_object(request))
    check_depth(item.data, "data")
    renderer = request.app[EMAIL_RENDERER]
    template = find_template(renderer.templates, item.type)
    if template is None:
        raise ApiError(400, "unknown_email_type", f"No email template is named {item.type!r}.",
                       details={"known": sorted(renderer.templates), "aliases": aliases(renderer.templates)})
    item = dataclasses.replace(item, type=template.name)  # an alias is stored as the template's name
    problems = data_problems(template, item.data, http=allows_http(request.app[SETTINGS]))
    if problems:
        raise ApiError(400, "invalid_email_data", f"The data does not fit the {item.type} template.", details=problems)
    if item.user_id == ADMIN and not request.app[SETTINGS].ops.admin_email:
        raise ApiError(409, "admin_email_not_configured", NO_ADMIN_EMAIL)
    try:  # the render check: a message that cannot be rendered is refused now, not dead-lettered later
        renderer.render(item.type, renderer.context(template, item.data, recipient={}, unsubscribe_url="#"))
    except (jinja2.TemplateError, TypeError, ValueError, OverflowError, OSError) as exc:  # OverflowError: a date
        raise ApiError(400, "invalid_email_data", f"The {item.type} template cannot be rendered with this data.",
                       details=[f"{type(exc).__name__}: {exc}"]) from None
    result = await request.app[EMAIL_QUEUE].submit(item)
    if isinstance(result, EmailRejected):
        raise ApiError(result.status, result.code, result.message, details=result.details)
    row, created = result
    if created and row["status"] == "queued" and EMAIL_WORKER in request.app:
        request.app[EMAIL_WORKER].wake()
    return web.json_response(await queue_answer(request.app[DB], row, created),
                             status=200 if row["status"] == "suppressed" else 202)


async def queue_answer(db, row: dict, created: bool) -> dict:
    """The answer to a queue request: vibe's own detail and the platform's `success`, `message`
    and `priority`; a suppressed message says why (`reason`, from its history)."""
    answer = {"id": row["id"], "status": row["status"], "type": row["type"], "user_id": row["user_id"],
              "idempotency_key": row["idempotency_key"], "duplicate": not created,
              "success": True, "message": "Email queued for processing", "priority": priority_name(row["priority"])}
    if row["status"] == "suppressed":
        reason = row.get("reason") or await db.fetchval(
            "SELECT detail FROM email_message_events WHERE email_id = %s AND status = 'suppressed' ORDER BY id "
            "LIMIT 1", (row["id"],))
        answer.update(message=f"Email not sent: {reason}", reason=reason)
    return answer


STATUS_KEYS = ("id", "type", "category", "status", "priority", "user_id", "recipient", "idempotency_key",
               "message_id", "provider_id", "attempts", "next_attempt_at", "last_error", "created_at", "updated_at",
               "sent_at", "data", "history")
STATUS_TIMES = ("next_attempt_at", "created_at", "updated_at", "sent_at")


async def show_email(request: web.Request) -> web.Response:
    principal = await require(request, "user", "admin", "service")
    row = await message_with_history(request.app[DB], int(request.match_info["id"]))
    own = row is not None and row["user_id"] == principal.user_id and row["user_id"] != ADMIN
    if row is None or not (principal.is_privileged or own):
        raise ApiError(404, "not_found", "No such email.")
    row = with_iso(row, *STATUS_TIMES)
    row.update(priority=priority_name(row["priority"]), history=all_iso(row["history"], "at"))
    return web.json_response({key: row[key] for key in STATUS_KEYS})


async def delivery_event(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.email.webhook_secret:
        raise ApiError(503, "webhook_not_configured", "EMAIL_WEBHOOK_SECRET is not set; delivery events are refused.")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY} bytes.")
    body = await request.read()
    try:
        svix_id = svix.verify(settings.email.webhook_secret, request.headers, body,
                              tolerance=settings.email.webhook_tolerance)
    except svix.SvixError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    event = parse_delivery_event(load_json(body, "The event"))
    async with request.app[DB].transaction() as tx:
        result = await apply_delivery_event(tx, svix_id, event, time.time())
    return web.json_response({"received": True, **result})


# What of a delivery event is read (the rest is Resend's and kept out of the database). Strings
# that no text column can hold (NUL, a lone surrogate) are refused by the shape, not met by SQL.
_TEXT = Field("str", nullable=True, strip=False, max_length=1000)
EVENT = Shape({
    "type": Field("str", required=True, min_length=1, max_length=100, strip=False),
    "data": Field("object", required=True, shape=Shape({
        "email_id": Field("str|int", nullable=True, strip=False, max_length=200),
        "to": Field("list|str", nullable=True, max_length=50, items=_TEXT),
        "bounce": Field("object", nullable=True, shape=Shape({"type": _TEXT, "message": _TEXT}, closed=False)),
    }, closed=False)),
}, closed=False)


def parse_delivery_event(event: Any) -> dict:
    """The event, checked: 400 `invalid_event` naming each field that is wrong."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        raise ApiError(400, "invalid_event", "Expected {\"type\": ..., \"data\": {...}}.")
    problems = Problems()
    EVENT.collect(event, problems, where="")
    if problems.found:
        raise ApiError(400, "invalid_event", "The event is not valid.",
                       details=[f"{p.field}: {p.message}" for p in problems.found])
    return event


async def apply_delivery_event(tx: Transaction, svix_id: str, event: dict, now: float) -> dict:
    kind, data = event["type"], event["data"]
    fresh = await tx.fetchall(
        "INSERT INTO email_webhook_events (id, type, received_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id", (svix_id, kind, now),
    )
    if not fresh:
        return {"duplicate": True}
    row = None
    if data.get("email_id"):
        row = await tx.fetchone("SELECT id, status, recipient FROM email_messages WHERE provider_id = %s FOR UPDATE",
                                (str(data["email_id"]),))
    bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
    hard = kind == "email.complained" or (kind == "email.bounced" and bounce.get("type", "Permanent") != "Transient")
    recipients = data.get("to") if isinstance(data.get("to"), list) else []
    addresses = {a.lower() for a in recipients if isinstance(a, str) and not address_problem(a)}
    addresses |= {row["recipient"]} if row else set()
    if hard:
        for address in addresses:
            await suppress(tx, address, "complaint" if kind == "email.complained" else "hard bounce", f"resend:{svix_id}", now)
    if row is None:
        return {"duplicate": False, "matched": False}
    await tx.execute("UPDATE email_webhook_events SET email_id = %s WHERE id = %s", (row["id"], svix_id))
    target = DELIVERY.get(kind)
    if kind == "email.bounced" and not hard:
        target = None
    detail = (bounce.get("message") or kind)[:500] if kind == "email.bounced" else kind
    if target and RANK.get(target, 0) > RANK.get(row["status"], -1):
        await set_status(tx, row["id"], target, now, detail=detail)
    else:
        record_event(tx, row["id"], kind.removeprefix("email."), detail, now)
    return {"duplicate": False, "matched": True, "email_id": row["id"], "status": target or row["status"]}


def setup_routes(app: web.Application) -> None:
    app.router.add_post(BASE, queue_email)
    app.router.add_post(f"{BASE}/events", delivery_event)
    app.router.add_get(BASE + r"/{id:\d{1,18}}", show_email)
