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
import re
import time
import uuid
import weakref
from typing import Any, Mapping

from vibe.db.database import Transaction
from vibe.email.templates import EmailTemplate, allows_http, collect_templates
from vibe.plugins.context import DomainContext

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


# What a recipient address may not hold: control characters, white space, NUL and lone
# surrogates (no header or database can carry them), and the RFC 5322 specials that would make
# the To header a list, a group or a display name. The same rule in SQL for `enqueue_for`, which
# reads nothing: PostgreSQL's regular expression, SQLite's GLOB (PostgreSQL text holds no NUL).
MAX_ADDRESS = 254
_SPACES = "\x01-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # ranges
_SPECIALS = '<>,;:"()['  # and `]` and `\\`, placed as each syntax needs them
_BAD_CHARS = re.compile("[\x00\ud800-\udfff" + _SPACES + re.escape(_SPECIALS + "]\\") + "]")
INVALID_ADDRESS = ("invalid address: not one address of at most 254 characters with one @ and no control "
                   "characters, spaces or <>,;:\"()[]\\")


def bad_address_sql(dialect: str, column: str) -> tuple[str, tuple]:
    """`address_problem` as an SQL condition on `column` (true when the address is bad), and its parameters."""
    if dialect == "postgresql":
        chars, pattern = f"{column} ~ %s", "[]" + _SPACES + _SPECIALS + "\\\\]"
    else:
        chars, pattern = f"{column} GLOB %s OR INSTR({column}, CHAR(0)) > 0", "*[]" + _SPACES + _SPECIALS + "\\]*"
    sql = (f"(LENGTH({column}) > {MAX_ADDRESS} OR {column} NOT LIKE '%%_@_%%' OR {column} LIKE '%%@%%@%%' "
           f"OR {chars})")
    return sql, (pattern,)


def address_problem(address: str) -> str | None:
    """Why `address` cannot be a recipient, or None when it can."""
    if len(address) > MAX_ADDRESS:
        return f"invalid address: longer than {MAX_ADDRESS} characters"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        return "invalid address: expected one @ with something on both sides"
    bad = _BAD_CHARS.search(address)
    if bad:
        return f"invalid address: holds {bad.group()!r}"
    return None


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
                  data: Mapping[str, Any], idempotency_key: str, sender: str,
                  now: float | None = None, http: bool = False) -> tuple[dict[str, Any], bool]:
    """Queue (or find) the message for `idempotency_key`; returns (row, created).

    Raises EmailRejected for an unknown type, bad data, an unknown user or one without an
    address, or a key already used for another user or type, always before writing anything:
    a caller batching several requests in one transaction needs no savepoint per request.
    `http`: plain-http links in the data are accepted (development; `templates.allows_http`).
    """
    now = time.time() if now is None else now
    template = _checked_template(templates, type, data, http)
    # One round trip for the common case: the user, their address's suppression, their choice
    # for the category, and whether this key was already used.
    profile = await tx.fetchone(
        "SELECT p.id, p.email, p.full_name, p.display_name, p.referral_code, s.reason AS suppressed, "
        "c.subscribed, m.id AS existing FROM profiles p "
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
        raise EmailRejected(422, "invalid_email_address", f"user {user_id}'s {problem}")
    data = dict(data)
    if template.prepare is not None:
        data = await template.prepare(tx, profile, data, now)
    status, detail = "queued", None
    if profile["suppressed"]:
        status, detail = "suppressed", ADDRESS_SUPPRESSED + profile["suppressed"]
    elif template.category != "transactional" and profile["subscribed"] is not None and not profile["subscribed"]:
        status, detail = "suppressed", _unsubscribed(template.category)
    row = {"idempotency_key": idempotency_key, "user_id": user_id, "recipient": profile["email"].lower(),
           "type": type, "category": template.category, "data": json.dumps(data, sort_keys=True),
           "status": status, "next_attempt_at": now if status == "queued" else None,
           "message_id": message_id_for(sender), "created_at": now, "updated_at": now}
    inserted = await tx.fetchall(
        f"INSERT INTO email_messages ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))}) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        list(row.values()),
    )
    if not inserted:  # another transaction queued this key a moment ago
        existing = await tx.fetchone("SELECT * FROM email_messages WHERE idempotency_key = %s", (idempotency_key,))
        return _same(existing, user_id, type), False
    row.update(id=inserted[0]["id"], attempts=0)
    record_event(tx, row["id"], status, detail, now)
    return row, True


def _checked_template(templates: Mapping[str, EmailTemplate], type: str, data: Mapping[str, Any],
                      http: bool) -> EmailTemplate:
    """The template named `type`, after checking `data` against it (EmailRejected if not)."""
    template = templates.get(type)
    if template is None:
        raise EmailRejected(400, "unknown_email_type", f"no email template named {type!r}",
                            details={"known": sorted(templates)})
    problems = template.validate(data, http=http)
    if problems:
        raise EmailRejected(400, "invalid_email_data", f"data does not fit the {type} template", details=problems)
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
                      idempotency_key: str) -> None:
    """What a domain hook calls: queue in the hook's transaction, keyed by the cause.

    Nothing is read and nothing waits: the message is written by two deferred statements that
    ride with the transaction's next one, taking the address, the suppression list and the
    user's preference from the database as they are then. A user who is unknown or has no
    address gets no mail (the change still commits); one whose address is not one plain address
    (`address_problem`: a token's email claim with CR/LF in it) gets a `suppressed` message
    whose history says so; a key already used queues nothing new.
    Bad data is a bug in the calling plugin and raises, rolling the change back to be retried.
    A template with a `prepare` step gets the recipient's profile from `ctx.profile` (no read
    when this unit of work already has it, as `user_created` does).
    """
    if not user_id:
        return
    template = _checked_template(hook_templates(ctx.pm, ctx.settings), type, data, allows_http(ctx.settings))
    data = dict(data)
    if template.prepare is not None:
        profile = await ctx.profile(user_id)
        if profile is None:
            return
        data = await template.prepare(ctx.tx, profile, data, ctx.now)
    bad, bad_values = bad_address_sql(ctx.tx.dialect, "p.email")
    suppressed = f"{bad} OR s.email IS NOT NULL"
    if template.category != "transactional":
        suppressed += " OR NOT COALESCE(c.subscribed, TRUE)"
    insert = (
        "INSERT INTO email_messages (idempotency_key, user_id, recipient, type, category, data, status, "
        "next_attempt_at, message_id, created_at, updated_at) "
        f"SELECT %s, p.id, LOWER(p.email), %s, %s, %s, CASE WHEN {suppressed} THEN 'suppressed' ELSE 'queued' END, "
        f"CASE WHEN {suppressed} THEN NULL ELSE {_TIME} END, %s, {_TIME}, {_TIME} "
        "FROM profiles p LEFT JOIN email_suppressions s ON s.email = LOWER(p.email) "
        "LEFT JOIN email_preferences c ON c.user_id = p.id AND c.category = %s "
        "WHERE p.id = %s AND COALESCE(p.email, '') <> '' ON CONFLICT (idempotency_key) DO NOTHING"
    )
    values = (idempotency_key, type, template.category, json.dumps(data, sort_keys=True), *bad_values,
              *bad_values, ctx.now, message_id_for(ctx.settings.email.sender), ctx.now, ctx.now,
              template.category, user_id)
    # Its first history line, as `enqueue` writes it, for the message just created (none if the
    # key was used before); a bad address says why the message is `suppressed`.
    bad_recipient, _ = bad_address_sql(ctx.tx.dialect, "m.recipient")
    history = ("INSERT INTO email_message_events (email_id, status, detail, at) "
               "SELECT m.id, m.status, CASE WHEN m.status = 'queued' THEN NULL "
               f"WHEN {bad_recipient} THEN %s "
               "WHEN s.reason IS NOT NULL THEN %s || s.reason ELSE %s END, " + _TIME + " "
               "FROM {messages} m LEFT JOIN email_suppressions s ON s.email = m.recipient")
    detail = (*bad_values, INVALID_ADDRESS, ADDRESS_SUPPRESSED, _unsubscribed(template.category), ctx.now)
    if ctx.tx.dialect == "postgresql":  # one statement: the history line from the insert's RETURNING
        ctx.tx.defer(f"WITH created AS ({insert} RETURNING id, status, recipient) "
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
