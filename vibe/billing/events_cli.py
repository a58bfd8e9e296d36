"""`python run.py events list|show|stats|replay`: the Stripe inbox, for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from vibe.billing.dispatcher import Dispatcher
from vibe.billing.registry import collect_stripe_handlers
from vibe.cli import CommandError, open_database, print_json
from vibe.config import Settings
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager

STATUSES = ("pending", "processed", "ignored", "skipped", "stale", "waiting", "failed", "dead")
LIST_COLUMNS = ("id, type, created, livemode, account, status, attempts, received_at, next_attempt_at, last_error, "
                "note, source")
REASON_WIDTH = 120  # the table's reason line


def _when(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts))) if ts else "-"


async def list_events(db, status: str | None, event_type: str | None, limit: int) -> list[dict]:
    where, params = [], []
    if status:
        where.append("status = %s")
        params.append(status)
    if event_type:
        where.append("type = %s")
        params.append(event_type)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return await db.fetchall(
        f"SELECT {LIST_COLUMNS} FROM stripe_events {clause}ORDER BY received_at DESC, id LIMIT %s",
        (*params, limit),
    )


async def event_stats(db) -> dict:
    rows = await db.fetchall("SELECT type, status, COUNT(*) AS n FROM stripe_events GROUP BY type, status")
    by_status: dict[str, int] = {}
    by_type: dict[str, dict[str, int]] = {}
    for row in rows:
        n = int(row["n"])
        by_status[row["status"]] = by_status.get(row["status"], 0) + n
        by_type.setdefault(row["type"], {})[row["status"]] = n
    return {"by_status": by_status, "by_type": by_type}


def reason(row: dict) -> str | None:
    """Why an event ended as it did, on one line: for a status other than `processed`, its note
    (why it is ignored, waiting, stale, needs configuration) or else its error's last line, with
    when it is tried next for a failure the dispatcher retries."""
    if row["status"] == "processed":
        return None
    error_lines = (row["last_error"] or "").strip().splitlines()
    text = row["note"] or (error_lines[-1] if error_lines else None)
    if not text:
        return None
    if row["status"] == "failed" and row.get("next_attempt_at") and not row["note"]:
        text += f" (next try {_when(row['next_attempt_at'])})"
    return text


def _short(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _decode(row: dict) -> dict:
    row = dict(row)
    row["livemode"] = bool(row["livemode"])
    if "payload" in row:
        row["payload"] = json.loads(row["payload"])
    return row


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async def run():
        async with open_database(settings) as db:
            return await list_events(db, args.status, args.type, args.limit)

    rows = [{**_decode(r), "reason": reason(r)} for r in asyncio.run(run())]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'received (UTC)':19}  {'status':9}  {'tries':>5}  {'type':34}  {'source':9}  id")
    for r in rows:
        print(f"{_when(r['received_at']):19}  {r['status']:9}  {r['attempts']:>5}  {r['type'][:34]:34}  "
              f"{r['source']:9}  {r['id']}")
        if r["reason"]:
            print(f"{'':40}{'note' if r['note'] else 'error'}: {_short(r['reason'])}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async def run():
        async with open_database(settings) as db:
            return await db.fetchone("SELECT * FROM stripe_events WHERE id = %s", (args.id,))

    row = asyncio.run(run())
    if row is None:
        raise CommandError(f"no Stripe event {args.id}")
    row = _decode(row)
    if args.json:
        print_json(row)
        return 0
    for key in ("id", "type", "source", "status", "attempts", "livemode", "account", "api_version", "object_id",
                "waiting_for", "note", "last_error"):
        print(f"{key:12} {row[key]}")
    for key in ("created", "received_at", "processed_at", "next_attempt_at"):
        print(f"{key:12} {_when(row[key])}")
    print(json.dumps(row["payload"], indent=2))
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    async def run():
        async with open_database(settings) as db:
            return await event_stats(db)

    stats = asyncio.run(run())
    if args.json:
        print_json(stats)
        return 0
    for status, n in sorted(stats["by_status"].items()):
        print(f"{status:10} {n}")
    for event_type, counts in sorted(stats["by_type"].items()):
        print(f"  {event_type:40} " + ", ".join(f"{s}={n}" for s, n in sorted(counts.items())))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.id) == bool(args.failed):
        raise CommandError("give an event ID or --failed (failed and dead events)")

    async def run():
        pm = build_plugin_manager(settings)
        async with open_database(settings) as db:
            dispatcher = Dispatcher(db, pm, collect_stripe_handlers(pm, settings), settings)
            if args.id:
                ids = [args.id]
            else:
                rows = await db.fetchall(
                    "SELECT id FROM stripe_events WHERE status IN ('failed', 'dead') ORDER BY created, received_at"
                )
                ids = [r["id"] for r in rows]
            return await dispatcher.process_ids(ids)

    rows = asyncio.run(run())
    if args.id and not rows:
        raise CommandError(f"no Stripe event {args.id}")
    results = [{"id": r["id"], "type": r["type"], "status": r["status"], "note": r["note"],
                "error": r["last_error"]} for r in rows]
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['id']}  {r['type']}  -> {r['status']}" + (f"  ({r['error']})" if r["error"] else ""))
        print(f"{len(results)} event(s) replayed")
    return 1 if any(r["status"] in ("failed", "dead") for r in results) else 0


@hookimpl
def register_cli_commands(subparsers):
    events = subparsers.add_parser("events", help="inspect and replay stored Stripe events")
    sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="recent events, newest first")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="one event with its payload")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("stats", help="counts by status and by type")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("replay", help="process an event again now (effects are idempotent)")
    p.add_argument("id", nargs="?")
    p.add_argument("--failed", action="store_true", help="replay every failed and dead event")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)
