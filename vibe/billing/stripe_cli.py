"""`python run.py stripe sign FILE` (the Stripe-Signature header Stripe would send for FILE) and
the commands that ask Stripe: `stripe catch-up` (vibe/billing/catchup.py) and `stripe reconcile`
(vibe/billing/reconcile.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from vibe.billing import signature as stripe_signature
from vibe.billing.catchup import MAX_AGE, catch_up, parse_since
from vibe.billing.dispatcher import Dispatcher
from vibe.billing.reconcile import compare, fix
from vibe.billing.registry import collect_stripe_handlers
from vibe.billing.stripe_api import StripeUnavailable, disabled_reason, open_stripe
from vibe.cli import CommandError, open_database, print_json
from vibe.config import Settings, ensure_webhook_secret
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager


def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    secret = args.secret or ensure_webhook_secret(settings)[0].billing.webhook_secrets[0]
    print(stripe_signature.sign(payload, secret, args.timestamp))
    return 0


def _needs_key(settings: Settings) -> None:
    reason = disabled_reason(settings)
    if reason:
        raise CommandError(reason)


async def process_stored(db, settings: Settings, pm) -> int:
    """Apply what is due now (what a command just stored), as the service's dispatcher would."""
    dispatcher = Dispatcher(db, pm, collect_stripe_handlers(pm, settings), settings)
    total = 0
    while n := await dispatcher.process_due():
        total += n
    return total


@contextlib.contextmanager
def _progress(enabled: bool):
    """A progress bar on a terminal (rich, on stderr); nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}: {task.completed} events listed"),
                  transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("stripe catch-up", total=None)
        yield lambda n: bar.advance(task, n)


def cmd_catch_up(args: argparse.Namespace, settings: Settings) -> int:
    _needs_key(settings)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError:
        raise CommandError(f"--since: expected 3d, 12h, 30m or an ISO 8601 time, got {args.since!r}") from None
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    pm = build_plugin_manager(settings)

    async def run():
        async with open_database(settings) as db, open_stripe(settings) as api:
            handlers = collect_stripe_handlers(pm, settings)
            with _progress(sys.stderr.isatty() and not args.json) as step:
                result = await catch_up(api, db, settings, handlers, since=since, types=types, progress=step)
            processed = await process_stored(db, settings, pm) if result.new else 0
            return result, processed

    try:
        result, processed = asyncio.run(run())
    except StripeUnavailable as exc:
        raise CommandError(f"{exc} (retry in {exc.retry_after:.0f} s)") from None
    if args.json:
        print_json({**result.as_dict(), "processed": processed})
    else:
        print(result.summary() + (f"; processed {processed}" if processed else ""))
    return 0


def _cell(value) -> str:
    text = "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _drift_table(drift) -> list[str]:
    lines = [f"{'kind':12}  {'object':28}  {'user':36}  {'field':20}  {'vibe':22}  stripe"]
    for d in drift:
        lines.append(f"{d.kind:12}  {d.object_id:28}  {_cell(d.user_id):36}  {d.field:20}  {_cell(d.vibe):22}  "
                     f"{_cell(d.stripe)}")
    return lines


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    _needs_key(settings)
    pm = build_plugin_manager(settings)

    async def run():
        async with open_database(settings) as db, open_stripe(settings) as api:
            found = await compare(api, db, settings)
            if not args.fix or not found.drift:
                return found, None, None
            applied = await fix(db, settings, found, lambda: process_stored(db, settings, pm))
            return found, applied, await compare(api, db, settings)

    try:
        found, applied, after = asyncio.run(run())
    except StripeUnavailable as exc:
        raise CommandError(f"{exc} (retry in {exc.retry_after:.0f} s)") from None
    remaining = (after or found).drift
    checked = {"customers": len(found.customers), "subscriptions": len(found.subscriptions)}
    if args.json:
        print_json({"checked": checked, "drift": [d.as_dict() for d in found.drift],
                    "fixed": applied, "remaining": [d.as_dict() for d in remaining] if applied is not None else None})
    else:
        print(f"checked {checked['customers']} customers and {checked['subscriptions']} subscriptions in Stripe: "
              + (f"{len(found.drift)} difference(s)" if found.drift else "no drift"))
        if found.drift:
            print("\n".join(_drift_table(found.drift)))
        if applied is not None:
            for event in applied:
                print(f"fixed: {event['type']} {event['id']} -> {event['status']}"
                      + (f" ({event['note']})" if event["note"] else ""))
            print(f"{len(remaining)} difference(s) left" if remaining else "no drift left")
    return 1 if remaining else 0


@hookimpl
def register_cli_commands(subparsers):
    stripe = subparsers.add_parser("stripe", help="Stripe helpers")
    sub = stripe.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    p = sub.add_parser("sign", help="print a Stripe-Signature header for a payload file ('-' for stdin)")
    p.add_argument("file")
    p.add_argument("--secret", help="whsec_... (default: the first STRIPE_WEBHOOK_SECRET, or the generated one)")
    p.add_argument("--timestamp", type=int, help="Unix time to sign at (default: now)")
    p.set_defaults(func=cmd_sign)
    p = sub.add_parser("catch-up", help="store the events Stripe has that vibe lacks (GET /v1/events)",
                       description="List Stripe's events (at most 30 days back) and store, then apply, every one "
                                   "the inbox does not have, as a delivered webhook would be.")
    p.add_argument("--since", help=f"how far back: 3d, 12h, 30m or an ISO 8601 time (at most {MAX_AGE // 86400} "
                                   "days; default: from where the last pass got, else 30 days)")
    p.add_argument("--types", help="event types, comma-separated (default: STRIPE_CATCHUP_TYPES, else the types "
                                   "vibe handles)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catch_up)
    p = sub.add_parser("reconcile", help="compare Stripe's customers and subscriptions with vibe's state",
                       description="List every customer and subscription (every status) in Stripe and print how "
                                   "vibe's state differs (exit 1 when it does). --fix applies Stripe's current "
                                   "objects through the handlers (source reconcile) and audits the changes; it "
                                   "exits 1 only when drift is left afterwards.")
    p.add_argument("--fix", action="store_true", help="apply Stripe's current objects")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)
