"""The email queue's writes: queueing a message once per idempotency key, and status changes.

Everything here takes an open transaction, so a domain hook queues mail in the transaction of
the change that caused it (a payment, a new user): the mail is queued exactly when the change
commits. Checks, in order: the type and its data, the recipient's address (present, and one
plain address: `address_problem`), the suppression list (blocks every category), and the
user's preference for the category (engagement only: transactional mail is never blocked by an
unsubscribe).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from typing import Any, Mapping

from vibe.db.database import Transaction
from vibe.email.intake import NORMAL, aliases, data_problems, find_template, rank
from vibe.email.recipients import (  # noqa: F401 - address_problem and bad_address_sql are used from here too
    ADMIN,
    INVALID_ADDRESS,
    NO_ADMIN_EMAIL,
    address_problem,
    bad_address_sql,
    switched_off,
    switched_off_detail,
    switched_off_sql,
)
from vibe.email.templates import EmailTemplate, allows_http, collect_templates
from vibe.plugins.context import DomainContext

log = logging.getLogger(__name__)

SENDABLE = ("queued", "failed")
FINAL = ("sent", "delivered", "bounced", "complained", "dead", "suppressed")
# A time parameter in INSERT ... SELECT: typed, so that PostgreSQL can prepare the statement (a
# bare parameter in a select list would be inferred as text; vibe/db/prepared.py)
_TIME = "CAST(%s AS DOUBLE PRECISION)"


class EmailRejected(Exception):
    """The message cannot be queued: `code` and `status` say why (the API answers with them)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def message_id_for(sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def record_event(tx: Transaction, email_id: int, status: str, detail: str | None, now: float) -> None:
    """Add a line to the message's history (deferred: it rides with the transaction's next statement)."""
    tx.defer(
        "INSERT INTO email_message_events (email_id, status, detail, at) VALUES (%s, %s, %s, %s)",
        (email_id, status, detail, now),
    )


async def enqueue(tx: Transaction, templates: Mapping[str, EmailTemplate], *, user_id: str, type: str,
                  data: Mapping[str, Any], idempotency_key: str, sender: str, now: float | None = None,
                  http: bool = False, priority: int = NORMAL, admin_email: str = "") -> tuple[dict[str, Any], bool]:
    """Queue (or find) the message for `idempotency_key`; returns (row, created).

    Raises EmailRejected for an unknown type, bad data, an unknown user or one without an
    address, or a key already used for another user or type, always before writing anything:
    a caller batching several requests in one transaction needs no savepoint per request.
    `type` may be an alias: the template's own name is stored. `user_id` "admin" addresses
    `admin_email` (ADMIN_EMAIL; 409 without one). `priority`: a rank (vibe.email.intake).
    `http`: plain-http links in the data are accepted (development; `templates.allows_http`).
    """
    now = time.time() if now is None else now
    template = _checked_template(templates, type, data, http)
    type = template.name
    if user_id == ADMIN:
        profile = await _admin_profile(tx, admin_email, idempotency_key)
    else:  # one round trip for the common case: the user, their address's suppression, their
        # choice for the category, and whether this key was already used
        profile = await tx.fetchone(
            "SELECT p.id, p.email, p.full_name, p.display_name, p.referral_code, p.locale, "
            "p.notification_preferences, s.reason AS suppressed, c.subscribed, m.id AS existing FROM profiles p "
            "LEFT JOIN email_suppressions s ON s.email = LOWER(p.email) "
            "LEFT JOIN email_preferences c ON c.user_id = p.id AND c.category = %s "
            "LEFT JOIN email_messages m ON m.idempotency_key = %s WHERE p.id = %s",
            (template.category, idempotency_key, user_id),
        )
    if profile is None or profile["existing"] is not None:
        existing = await tx.fetchone("SELECT * FROM email_messages WHERE idempotency_key = %s", (idempotency_key,))
        if existing is not None:
            return _same(existing, user_id, type), False
    if profile is None:
        raise EmailRejected(404, "user_not_found", f"no user {user_id}")
    if not profile["email"]:
        raise EmailRejected(422, "no_email_address", f"user {user_id} has no email address")
    problem = address_problem(profile["email"])
    if problem:  # e.g. a token's email claim with CR/LF in it: refused, never queued to stick
        whose = "ADMIN_EMAIL:" if user_id == ADMIN else f"user {user_id}'s"
        raise EmailRejected(422, "invalid_email_address", f"{whose} {problem}")
    data = dict(data)
    if template.prepare is not None:
        data = await template.prepare(tx, profile, data, now)
    status, detail = "queued", None
    if profile["suppressed"]:
        status, detail = "suppressed", ADDRESS_SUPPRESSED + profile["suppressed"]
    elif template.category != "transactional" and profile["subscribed"] is not None and not profile["subscribed"]:
        status, detail = "suppressed", _unsubscribed(template.category)
    elif switched_off(template, profile["notification_preferences"]):
        status, detail = "suppressed", switched_off(template, profile["notification_preferences"])
    row = {"idempotency_key": idempotency_key, "user_id": user_id, "recipient": profile["email"].lower(),
           "type": type, "category": template.category, "data": json.dumps(data, sort_keys=True),
           "status": status, "next_attempt_at": now if status == "queued" else None, "priority": priority,
           "message_id": message_id_for(sender), "created_at": now, "updated_at": now}
    inserted = await tx.fetchall(
        f"INSERT INTO email_messages ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))}) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        list(row.values()),
    )
    if not inserted:  # another transaction queued this key a moment ago
        existing = await tx.fetchone("SELECT * FROM email_messages WHERE idempotency_key = %s", (idempotency_key,))
        return _same(existing, user_id, type), False
    row.update(id=inserted[0]["id"], attempts=0, reason=detail)
    record_event(tx, row["id"], status, detail, now)
    return row, True


async def _admin_profile(tx: Transaction, admin_email: str, idempotency_key: str) -> dict[str, Any]:
    """The administrator as a recipient: ADMIN_EMAIL, its suppression, and this key's message."""
    if not admin_email:
        raise EmailRejected(409, "admin_email_not_configured", NO_ADMIN_EMAIL)
    found = await tx.fetchone(
        "SELECT s.reason AS suppressed, m.id AS existing FROM (SELECT 1 AS one) o "
        "LEFT JOIN email_suppressions s ON s.email = %s LEFT JOIN email_messages m ON m.idempotency_key = %s",
        (admin_email.lower(), idempotency_key))
    return {"id": ADMIN, "email": admin_email, "full_name": None, "display_name": None, "referral_code": None,
            "locale": None, "notification_preferences": None, "subscribed": None, **found}


def _checked_template(templates: Mapping[str, EmailTemplate], type: str, data: Mapping[str, Any],
                      http: bool) -> EmailTemplate:
    """The template named (or aliased) `type`, after checking `data` against it (EmailRejected if not)."""
    template = find_template(templates, type)
    if template is None:
        raise EmailRejected(400, "unknown_email_type", f"no email template named {type!r}",
                            details={"known": sorted(templates), "aliases": aliases(templates)})
    problems = data_problems(template, data, http=http)
    if problems:
        raise EmailRejected(400, "invalid_email_data", f"data does not fit the {template.name} template",
                            details=problems)
    return template


# The history's detail for a message not sent: the address's suppression reason follows.
ADDRESS_SUPPRESSED = "address suppressed: "


def _unsubscribed(category: str) -> str:
    return f"unsubscribed from {category} mail"


def _same(row: dict, user_id: str, type: str) -> dict:
    if row["user_id"] != user_id or row["type"] != type:
        raise EmailRejected(409, "idempotency_key_reused",
                            "this idempotency key was already used for another user or email type")
    return row


async def enqueue_for(ctx: DomainContext, user_id: str | None, type: str, data: Mapping[str, Any],
                      idempotency_key: str, *, priority: str = "normal") -> None:
    """What a domain hook calls: queue in the hook's transaction, keyed by the cause.

    Nothing is read and nothing waits: the message is written by two deferred statements that
    ride with the transaction's next one, taking the address, the suppression list and the
    user's preferences from the database as they are then. A user who is unknown or has no
    address gets no mail (the change still commits); one whose address is not one plain address
    (`address_problem`: a token's email claim with CR/LF in it) gets a `suppressed` message
    whose history says so; a key already used queues nothing new.
    Bad data is a bug in the calling plugin and raises, rolling the change back to be retried.
    A template with a `prepare` step gets the recipient's profile from `ctx.profile` (no read
    when this unit of work already has it, as `user_created` does).
    `user_id` "admin" queues to ADMIN_EMAIL (read, as `enqueue` does: such mail is rare); with
    none configured, or not one plain address, it is logged and nothing is queued.
    """
    if not user_id:
        return
    templates = hook_templates(ctx.pm, ctx.settings)
    if user_id == ADMIN:
        try:
            await enqueue(ctx.tx, templates, user_id=ADMIN, type=type, data=data, idempotency_key=idempotency_key,
                          sender=ctx.settings.email.sender, now=ctx.now, http=allows_http(ctx.settings),
                          priority=rank(priority), admin_email=ctx.settings.ops.admin_email)
        except EmailRejected as exc:
            if exc.code not in ("admin_email_not_configured", "invalid_email_address"):
                raise
            log.warning("%s for the administrator not queued (%s): %s", type, idempotency_key, exc.message)
        return
    template = _checked_template(templates, type, data, allows_http(ctx.settings))
    data = dict(data)
    if template.prepare is not None:
        profile = await ctx.profile(user_id)
        if profile is None:
            return
        data = await template.prepare(ctx.tx, profile, data, ctx.now)
    dialect = ctx.tx.dialect
    bad, bad_values = bad_address_sql(dialect, "p.email")
    suppressed, suppressed_values = f"{bad} OR s.email IS NOT NULL", bad_values
    if template.category != "transactional":
        suppressed += " OR NOT COALESCE(c.subscribed, TRUE)"
    off = "FALSE"
    if template.preference:
        off = switched_off_sql(dialect, "p.notification_preferences")
        suppressed, suppressed_values = f"{suppressed} OR {off}", (*bad_values, template.preference)
    insert = (
        "INSERT INTO email_messages (idempotency_key, user_id, recipient, type, category, data, status, "
        "next_attempt_at, priority, message_id, created_at, updated_at) "
        f"SELECT %s, p.id, LOWER(p.email), %s, %s, %s, CASE WHEN {suppressed} THEN 'suppressed' ELSE 'queued' END, "
        f"CASE WHEN {suppressed} THEN NULL ELSE {_TIME} END, CAST(%s AS SMALLINT), %s, {_TIME}, {_TIME} "
        "FROM profiles p LEFT JOIN email_suppressions s ON s.email = LOWER(p.email) "
        "LEFT JOIN email_preferences c ON c.user_id = p.id AND c.category = %s "
        "WHERE p.id = %s AND COALESCE(p.email, '') <> '' ON CONFLICT (idempotency_key) DO NOTHING"
    )
    values = (idempotency_key, template.name, template.category, json.dumps(data, sort_keys=True),
              *suppressed_values, *suppressed_values, ctx.now, rank(priority),
              message_id_for(ctx.settings.email.sender), ctx.now, ctx.now, template.category, user_id)
    # Its first history line, as `enqueue` writes it, for the message just created (none if the
    # key was used before); a bad address says why the message is `suppressed`.
    bad_recipient, _ = bad_address_sql(dialect, "m.recipient")
    history = ("INSERT INTO email_message_events (email_id, status, detail, at) "
               "SELECT m.id, m.status, CASE WHEN m.status = 'queued' THEN NULL "
               f"WHEN {bad_recipient} THEN %s WHEN s.reason IS NOT NULL THEN %s || s.reason "
               f"WHEN {off} THEN %s ELSE %s END, {_TIME} "
               "FROM {messages} m LEFT JOIN email_suppressions s ON s.email = m.recipient "
               "LEFT JOIN profiles p ON p.id = m.user_id")
    detail = (*bad_values, INVALID_ADDRESS, ADDRESS_SUPPRESSED,
              *((template.preference,) if template.preference else ()),
              switched_off_detail(template.preference or ""), _unsubscribed(template.category), ctx.now)
    if dialect == "postgresql":  # one statement: the history line from the insert's RETURNING
        ctx.tx.defer(f"WITH created AS ({insert} RETURNING id, status, recipient, user_id) "
                     + history.format(messages="created"), (*values, *detail))
    else:  # the new message is the one with this key and no history yet
        ctx.tx.defer(insert, values)
        ctx.tx.defer(history.format(messages="email_messages") + " WHERE m.idempotency_key = %s AND NOT EXISTS "
                     "(SELECT 1 FROM email_message_events e WHERE e.email_id = m.id)", (*detail, idempotency_key))


_HOOK_TEMPLATES: "weakref.WeakKeyDictionary[Any, dict[str, EmailTemplate]]" = weakref.WeakKeyDictionary()


def hook_templates(pm, settings) -> dict[str, EmailTemplate]:
    """The registered templates, checked once per plugin manager, not on every hook call."""
    cached = _HOOK_TEMPLATES.get(pm)
    if cached is None:
        cached = _HOOK_TEMPLATES[pm] = collect_templates(pm, settings)
    return cached


async def set_status(tx: Transaction, email_id: int, status: str, now: float, *, detail: str | None = None,
                     **fields: Any) -> None:
    """Change a message's status (and other columns) and record the change in its history."""
    assignments = "".join(f", {name} = %s" for name in fields)
    await tx.execute(
        f"UPDATE email_messages SET status = %s, updated_at = %s{assignments} WHERE id = %s",
        (status, now, *fields.values(), email_id),
    )
    record_event(tx, email_id, status, detail, now)


async def suppress(tx: Transaction, address: str, reason: str, source: str, now: float) -> bool:
    rows = await tx.fetchall(
        "INSERT INTO email_suppressions (email, reason, source, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (email) DO NOTHING RETURNING email",
        (address.lower(), reason, source, now),
    )
    return bool(rows)


async def set_preference(tx: Transaction, user_id: str, category: str, subscribed: bool, source: str,
                         now: float) -> None:
    await tx.execute(
        "INSERT INTO email_preferences (user_id, category, subscribed, source, updated_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, category) DO UPDATE SET "
        "subscribed = excluded.subscribed, source = excluded.source, updated_at = excluded.updated_at",
        (user_id, category, subscribed, source, now),
    )


async def message_with_history(db, email_id: int) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT * FROM email_messages WHERE id = %s", (email_id,))
    if row is None:
        return None
    row["data"] = json.loads(row["data"])
    row["history"] = await db.fetchall(
        "SELECT status, detail, at FROM email_message_events WHERE email_id = %s ORDER BY id", (email_id,)
    )
    return row
