#!/usr/bin/env python3
"""Sign a Stripe event the way Stripe does and post it to vibe.

    python examples/post_stripe_event.py tests/fixtures/stripe/events/customer.created.json \
        --url http://127.0.0.1:8080/functions/v1/stripe-webhook --secret whsec_...

The secret defaults to STRIPE_WEBHOOK_SECRET, else the one `python run.py serve` generated in
VIBE_DATA_DIR (./var). `--fresh` gives the event a new id and `created`, so the same file can be
posted many times as distinct events. `--user USER_ID` names the platform's user the way the
checkout page does (the session's `client_reference_id`, and `metadata.user_id`); the events in
examples/stripe/ are one customer's checkout, subscription and first invoice, for the README's
quick start. Only the standard library is used, so this script can be copied anywhere.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def default_secret() -> str | None:
    if os.environ.get("STRIPE_WEBHOOK_SECRET"):
        return os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
    path = Path(os.environ.get("VIBE_DATA_DIR", "var")) / "stripe_webhook_secret"
    return path.read_text().strip() if path.exists() else None


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a Stripe event as JSON ('-' for stdin)")
    parser.add_argument("--url", default="http://127.0.0.1:8080/functions/v1/stripe-webhook")
    parser.add_argument("--secret", default=default_secret())
    parser.add_argument("--fresh", action="store_true", help="new event id and created time")
    parser.add_argument("--user", metavar="USER_ID", help="the user the event's object belongs to")
    args = parser.parse_args()
    if not args.secret:
        parser.error("no secret: pass --secret or set STRIPE_WEBHOOK_SECRET")
    payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    if args.fresh or args.user:
        event = json.loads(payload)
        if args.fresh:
            event.update(id=f"evt_{uuid.uuid4().hex[:24]}", created=int(time.time()))
        if args.user:
            obj = event["data"]["object"]
            obj["metadata"] = {**(obj.get("metadata") or {}), "user_id": args.user}
            if obj.get("object") == "checkout.session":
                obj["client_reference_id"] = args.user
        payload = json.dumps(event).encode()
    request = urllib.request.Request(args.url, data=payload, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, args.secret, int(time.time())),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.status, response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read().decode(), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
