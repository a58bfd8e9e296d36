"""`python run.py users show USER_ID [--json]`: a user's profile and billing, for support."""

from __future__ import annotations

import argparse
import asyncio

from vibe.cli import CommandError, open_database, print_json
from vibe.config import Settings
from vibe.plugins.hookspecs import hookimpl

BOOLEANS = ("marketing_consent", "cancel_at_period_end", "needs_review")


async def user_billing(db, user_id: str) -> dict | None:
    profile = await db.fetchone("SELECT * FROM profiles WHERE id = %s", (user_id,))
    if profile is None:
        return None
    for key in BOOLEANS:
        profile[key] = bool(profile[key])
    profile["payments"] = await db.fetchall(
        "SELECT id, status, kind, amount, currency, invoice_id, payment_intent_id, charge_id, "
        "checkout_session_id, subscription_id, failure_message, created FROM payments "
        "WHERE user_id = %s ORDER BY created, id", (user_id,),
    )
    profile["disputes"] = await db.fetchall(
        "SELECT id, charge_id, payment_intent_id, amount, currency, reason, status, created FROM disputes "
        "WHERE user_id = %s ORDER BY created", (user_id,),
    )
    profile["commissions"] = await db.fetchall(
        "SELECT id, referred_user_id, payment_id, amount, currency, rate, created_at FROM commissions "
        "WHERE referrer_id = %s ORDER BY id", (user_id,),
    )
    profile["subscriptions"] = await db.fetchall(
        "SELECT id, status, tier, price_id, amount, currency, billing_interval, current_period_end, "
        "cancel_at_period_end FROM subscriptions WHERE user_id = %s ORDER BY updated_at", (user_id,),
    )
    for sub in profile["subscriptions"]:
        sub["cancel_at_period_end"] = bool(sub["cancel_at_period_end"])
    return profile


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async def run():
        async with open_database(settings) as db:
            return await user_billing(db, args.user_id)

    user = asyncio.run(run())
    if user is None:
        raise CommandError(f"no user {args.user_id}")
    if args.json:
        print_json(user)
        return 0
    for key in ("id", "email", "tier", "subscription_status", "current_period_end", "cancel_at_period_end",
                "stripe_customer_id", "referral_code", "referred_by", "needs_review"):
        print(f"{key:22} {user[key]}")
    for section in ("payments", "disputes", "commissions"):
        print(f"{section}:")
        for row in user[section]:
            print(f"  #{row['id']}  {row['amount']} {row['currency']}  " +
                  "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "amount", "currency") and v))
    return 0


@hookimpl
def register_cli_commands(subparsers):
    users = subparsers.add_parser("users", help="look at users")
    sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = sub.add_parser("show", help="a user's profile, tier, payments, disputes and commissions")
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
