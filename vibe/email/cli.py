"""`python run.py email list|preview|retry|run-schedule`: the email queue, for people and operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import jinja2

from vibe.cli import CommandError, open_database, print_json
from vibe.config import Settings
from vibe.email.locales import language_of, languages
from vibe.email.queue import record_event
from vibe.email.schedule import run_schedule
from vibe.email.templates import (
    EmailRenderer,
    TemplateError,
    allows_http,
    collect_templates,
)
from vibe.email.unsubscribe import UnsubscribeLinks
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager

SAMPLE_RECIPIENT = {"full_name": "Ada Lovelace", "email": "ada@example.com"}


def _templates(settings: Settings):
    try:
        return collect_templates(build_plugin_manager(settings), settings)
    except TemplateError as exc:
        raise CommandError(str(exc)) from None


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    templates = _templates(settings)
    template = templates.get(args.type)
    if template is None:
        raise CommandError(f"no email template named {args.type!r}; known: {', '.join(sorted(templates))}")
    if args.data is None:
        data = dict(template.sample)
    else:
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from None
    problems = template.validate(data, http=allows_http(settings))
    if problems:
        raise CommandError("; ".join(problems))
    renderer = EmailRenderer(templates, settings)
    links = UnsubscribeLinks(settings, b"preview-only-key")
    unsubscribe = links.url("USER_ID", template.category) if template.category != "transactional" else None
    try:
        rendered = renderer.render(args.type, renderer.context(template, data, recipient=SAMPLE_RECIPIENT,
                                                               unsubscribe_url=unsubscribe, locale=args.locale))
    except (jinja2.TemplateError, TypeError, ValueError) as exc:  # ValueError: a filter's (money, date, ...)
        raise CommandError(f"{args.type} cannot be rendered with this data: {exc}") from None
    if args.html:
        sys.stdout.write(rendered.html)
    elif args.text:
        sys.stdout.write(rendered.text)
    else:
        sys.stdout.write(f"Subject: {rendered.subject}\nCategory: {template.category}\nLanguage: {rendered.locale}\n\n"
                         f"{rendered.text}")
    return 0


async def requeue_dead(db, email_id: int | None = None) -> list[int]:
    now = time.time()
    async with db.transaction() as tx:
        where, params = ("status = 'dead'", ()) if email_id is None else ("status = 'dead' AND id = %s", (email_id,))
        rows = await tx.fetchall(f"SELECT id FROM email_messages WHERE {where} ORDER BY id FOR UPDATE", params)
        ids = [r["id"] for r in rows]
        await tx.executemany(
            "UPDATE email_messages SET status = 'queued', attempts = 0, next_attempt_at = %s, last_error = NULL, "
            "claimed_at = NULL, updated_at = %s WHERE id = %s", [(now, now, i) for i in ids],
        )
        for i in ids:
            record_event(tx, i, "queued", "requeued by an operator (email retry --dead)", now)
    return ids


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if not args.dead:
        raise CommandError("give --dead: requeue the messages that gave up (all, or one with --id)")

    async def run():
        async with open_database(settings) as db:
            return await requeue_dead(db, args.id)

    ids = asyncio.run(run())
    if args.id is not None and not ids:
        raise CommandError(f"email {args.id} is not dead")
    if args.json:
        print_json({"requeued": ids})
    else:
        print(f"{len(ids)} message(s) requeued; a running service sends them at its next poll")
    return 0


def cmd_run_schedule(args: argparse.Namespace, settings: Settings) -> int:
    templates = _templates(settings)

    async def run():
        async with open_database(settings) as db:
            return await run_schedule(db, templates, settings)

    counts = asyncio.run(run())
    if args.json:
        print_json(counts)
    else:
        for kind, n in counts.items():
            print(f"{kind:24} {n} queued")
    return 0


LIST_COLUMNS = "id, created_at, status, type, recipient, user_id, attempts, sent_at, last_error"
STATUSES = ("queued", "sending", "sent", "failed", "dead", "suppressed", "delivered", "bounced", "complained")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    where, params = [], []
    for column, value in (("status", args.status), ("user_id", args.user), ("type", args.type)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    sql = (f"SELECT {LIST_COLUMNS} FROM email_messages {'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY id DESC LIMIT %s")

    async def run():
        async with open_database(settings) as db:
            return await db.fetchall(sql, (*params, args.limit))

    rows = asyncio.run(run())
    if args.json:
        print_json(rows)
        return 0
    print(f"{'id':>6}  {'queued (UTC)':19}  {'status':10}  {'type':22}  recipient")
    for r in rows:
        queued = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_at"]))
        print(f"{r['id']:>6}  {queued:19}  {r['status']:10}  {r['type'][:22]:22}  {r['recipient']}")
        if r["last_error"] and r["status"] != "sent":
            print(f"{'':8}error: {r['last_error'].splitlines()[-1][:120]}")
    return 0


def _locale(raw: str) -> str:
    language = language_of(raw)
    if language is None:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(languages())} (or a tag such as de-DE)")
    return language


def _limit(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError("expected 1 to 10000")
    return value


@hookimpl
def register_cli_commands(subparsers):
    email = subparsers.add_parser("email", help="list the queue, preview templates, requeue dead mail, run the "
                                  "schedule")
    sub = email.add_subparsers(dest="email_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="queued and sent mail, newest first")
    p.add_argument("--status", choices=STATUSES, help="only this status")
    p.add_argument("--user", metavar="USER_ID", help="only this user's mail")
    p.add_argument("--type", metavar="TYPE", help="only this template")
    p.add_argument("--limit", type=_limit, default=50, help="at most this many (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("preview", help="render one template for a person to look at")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("--data", help="the template's data as JSON (default: the template's sample)")
    p.add_argument("--locale", type=_locale, metavar="LANGUAGE", help=f"{' or '.join(languages())} "
                   "(default: EMAIL_DEFAULT_LOCALE)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--html", action="store_true", help="only the HTML body")
    shape.add_argument("--text", action="store_true", help="only the text body")
    p.set_defaults(func=cmd_preview)
    p = sub.add_parser("retry", help="requeue messages that gave up")
    p.add_argument("--dead", action="store_true", help="requeue dead messages")
    p.add_argument("--id", type=int, help="only this message")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)
    p = sub.add_parser("run-schedule", help="queue the scheduled mail that is due now (one pass)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run_schedule)
