"""`python run.py stripe sign FILE`: the Stripe-Signature header Stripe would send for FILE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vibe.billing import signature as stripe_signature
from vibe.cli import CommandError
from vibe.config import Settings, ensure_webhook_secret
from vibe.plugins.hookspecs import hookimpl


def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    secret = args.secret or ensure_webhook_secret(settings)[0].billing.webhook_secrets[0]
    print(stripe_signature.sign(payload, secret, args.timestamp))
    return 0


@hookimpl
def register_cli_commands(subparsers):
    stripe = subparsers.add_parser("stripe", help="Stripe helpers")
    sub = stripe.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    p = sub.add_parser("sign", help="print a Stripe-Signature header for a payload file ('-' for stdin)")
    p.add_argument("file")
    p.add_argument("--secret", help="whsec_... (default: the first STRIPE_WEBHOOK_SECRET, or the generated one)")
    p.add_argument("--timestamp", type=int, help="Unix time to sign at (default: now)")
    p.set_defaults(func=cmd_sign)
