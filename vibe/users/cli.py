"""`python run.py users show USER_ID [--json]`: a user's profile and billing, for support.

`python run.py token USER_ID [--admin | --service] [--minutes N]`: a Supabase-shaped access token
that the local service accepts, for development and tests (never in production).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import jwt

from vibe.cli import CommandError, open_database, print_json
from vibe.config import JWT_SECRET_FILE, Settings, ensure_jwt_secret
from vibe.plugins.hookspecs import hookimpl
from vibe.users.sessions import preferences

BOOLEANS = ("marketing_consent", "cancel_at_period_end", "needs_review")


async def user_billing(db, user_id: str) -> dict | None:
    profile = await db.fetchone("SELECT * FROM profiles WHERE id = %s", (user_id,))
    if profile is None:
        return None
    for key in BOOLEANS:
        profile[key] = bool(profile[key])
    profile["notification_preferences"] = preferences(profile.get("notification_preferences"))
    profile["payments"] = await db.fetchall(
        "SELECT id, status, kind, amount, amount_refunded, amount_lost, currency, invoice_id, payment_intent_id, "
        "charge_id, checkout_session_id, subscription_id, failure_message, created FROM payments "
        "WHERE user_id = %s ORDER BY created, id", (user_id,),
    )
    for payment in profile["payments"]:  # what stayed paid: less refunds and lost disputes
        payment["net"] = int(payment["amount"]) - int(payment["amount_refunded"]) - int(payment["amount_lost"])
    profile["disputes"] = await db.fetchall(
        "SELECT id, charge_id, payment_intent_id, amount, currency, reason, status, created FROM disputes "
        "WHERE user_id = %s ORDER BY created", (user_id,),
    )
    profile["commissions"] = await db.fetchall(
        "SELECT id, referred_user_id, payment_id, amount, currency, rate, created_at FROM commissions "
        "WHERE referrer_id = %s ORDER BY id", (user_id,),
    )
    profile["commission_reversals"] = await db.fetchall(
        "SELECT id, commission_id, payment_id, amount, currency, reason, created_at FROM commission_reversals "
        "WHERE referrer_id = %s ORDER BY id", (user_id,),
    )
    profile["net"] = _net(profile)
    profile["subscriptions"] = await db.fetchall(
        "SELECT id, status, tier, price_id, amount, currency, billing_interval, current_period_end, "
        "cancel_at_period_end FROM subscriptions WHERE user_id = %s ORDER BY updated_at", (user_id,),
    )
    for sub in profile["subscriptions"]:
        sub["cancel_at_period_end"] = bool(sub["cancel_at_period_end"])
    return profile


def _net(profile: dict) -> dict:
    """Per currency: what the user paid and kept paid, and the referral commissions that stand
    (earned less reversed)."""
    paid: dict[str, int] = {}
    earned: dict[str, int] = {}
    for p in profile["payments"]:
        if p["status"] == "succeeded":
            paid[p["currency"]] = paid.get(p["currency"], 0) + p["net"]
    for c in profile["commissions"] + profile["commission_reversals"]:
        earned[c["currency"]] = earned.get(c["currency"], 0) + int(c["amount"])
    return {"paid": dict(sorted(paid.items())), "commissions": dict(sorted(earned.items()))}


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
    for section in ("payments", "disputes", "commissions", "commission_reversals"):
        print(f"{section}:")
        for row in user[section]:
            print(f"  #{row['id']}  {row['amount']} {row['currency']}  " +
                  "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "amount", "currency") and v))
    for kind, totals in user["net"].items():
        print(f"net {kind + ':':13} " + (", ".join(f"{v} {c}" for c, v in totals.items()) or "none"))
    return 0


def token_claims(args: argparse.Namespace, settings: Settings, now: int) -> dict:
    """The claims Supabase Auth puts in an access token, for this user (or the service role)."""
    claims: dict = {"iat": now, "exp": now + int(args.minutes * 60)}
    if settings.web.jwt_issuer:
        claims["iss"] = settings.web.jwt_issuer
    if args.service:
        return {**claims, "role": "service_role"}
    return {**claims, "aud": "authenticated", "role": "authenticated", "sub": args.user_id,
            "email": args.email or f"{args.user_id[:40]}@example.com", "session_id": str(uuid.uuid4()),
            "aal": "aal1", "is_anonymous": False,
            "user_metadata": {"full_name": args.name} if args.name else {},
            "app_metadata": {"provider": "email", "providers": ["email"], **({"role": "admin"} if args.admin else {})}}


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    if settings.env == "production":
        print("error: `token` makes development tokens and refuses to run with VIBE_ENV=production",
              file=sys.stderr)
        return 2
    if not args.service and not args.user_id:
        raise CommandError("name the user (USER_ID), or pass --service for a service-role token")
    if args.user_id is not None and not 0 < len(args.user_id) <= 128:
        raise CommandError("USER_ID must be 1 to 128 characters")
    if not settings.web.supabase_jwt_secret and settings.web.supabase_jwks_url:
        raise CommandError("this service checks tokens against SUPABASE_URL's keys: sign in through Supabase, "
                           "or set SUPABASE_JWT_SECRET to make HS256 tokens here")
    settings, generated = ensure_jwt_secret(settings)
    if generated:
        print(f"(signed with the development secret kept in {settings.data_dir / JWT_SECRET_FILE}; "
              "`python run.py serve` uses the same one)", file=sys.stderr)
    print(jwt.encode(token_claims(args, settings, int(time.time())), settings.web.supabase_jwt_secret,
                     algorithm="HS256"))
    return 0


def _minutes(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 60 * 24 * 30:
        raise argparse.ArgumentTypeError("expected minutes between 0 and 43200 (30 days)")
    return value


@hookimpl
def register_cli_commands(subparsers):
    t = subparsers.add_parser(
        "token", help="print a user (or service-role) token the local service accepts, for development",
        description="Print an HS256 access token shaped like Supabase Auth's, signed with SUPABASE_JWT_SECRET "
                    "(or, in development with none set, the secret kept in the data folder).")
    t.add_argument("user_id", nargs="?", metavar="USER_ID", help="the token's subject (not needed with --service)")
    role = t.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="an administrator (app_metadata.role = admin)")
    role.add_argument("--service", action="store_true", help="the service role (server-to-server)")
    t.add_argument("--minutes", type=_minutes, default=60.0, help="lifetime (default: %(default)s)")
    t.add_argument("--email", help="the token's email (default: USER_ID@example.com)")
    t.add_argument("--name", help="the user's full name (user_metadata.full_name)")
    t.set_defaults(func=cmd_token)

    users = subparsers.add_parser("users", help="look at users")
    sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = sub.add_parser("show", help="a user's profile, tier, payments, disputes and commissions")
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
