"""`python run.py analytics forget|export USER_ID`: erase or hand over a user's analytics.

`forget` works on a running service at once: every instance watches `analytics_erasures` and
drops its query cache within ANALYTICS_ERASURE_POLL_SECONDS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from vibe.analytics.model import EventInvalid, check_id, stored_event
from vibe.analytics.store import export_user, forget_user
from vibe.cli import CommandError, open_database, print_json
from vibe.config import Settings
from vibe.plugins.hookspecs import hookimpl


def _user(value: str) -> str:
    try:
        return check_id(value, "USER_ID", required=True)
    except EventInvalid as exc:
        raise CommandError(exc.message) from None


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    user_id = _user(args.user_id)

    async def run():
        async with open_database(settings) as db:
            return await forget_user(db, user_id)

    result = {"user_id": user_id, **asyncio.run(run())}
    if args.json:
        print_json(result)
    else:
        print(f"erased {result['events_deleted']} events of {user_id} "
              f"(and {result['anonymous_ids']} anonymous ids linked to them) and their distinct-user counts")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    user_id = _user(args.user_id)

    async def run():
        async with open_database(settings) as db:
            return await export_user(db, user_id)

    rows = asyncio.run(run())
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for row in rows:
            out.write(json.dumps(stored_event(row), separators=(",", ":"), sort_keys=True) + "\n")
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"wrote {len(rows)} events of {user_id} to {args.output}", file=sys.stderr)
    return 0


@hookimpl
def register_cli_commands(subparsers):
    analytics = subparsers.add_parser("analytics", help="erase or export a user's analytics events")
    sub = analytics.add_subparsers(dest="analytics_command", required=True, metavar="ACTION")
    p = sub.add_parser("forget", help="erase a user's events and their share of distinct-user counts")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forget)
    p = sub.add_parser("export", help="write a user's events as JSON lines (stdout, or --output FILE)")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--output", "-o", help="file to write instead of stdout")
    p.set_defaults(func=cmd_export)
