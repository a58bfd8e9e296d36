"""Queue an email through the running service and follow it until it is sent.

    SUPABASE_SERVICE_ROLE_KEY=... python examples/send_email.py USER_ID payment_confirmation \
        '{"amount": 2900, "currency": "usd"}' [--url http://127.0.0.1:8080]

With the default outbox sender the message appears as an .eml file in var/outbox/.
"""

import argparse
import asyncio
import json
import os
import sys

import aiohttp


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("user_id")
    parser.add_argument("type")
    parser.add_argument("data", nargs="?", default="{}")
    parser.add_argument("--key", help="idempotency key: the same key twice sends once")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    token = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if not token:
        print("set SUPABASE_SERVICE_ROLE_KEY (a service_role token)", file=sys.stderr)
        return 2
    body = {"user_id": args.user_id, "type": args.type, "data": json.loads(args.data)}
    if args.key:
        body["idempotency_key"] = args.key
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{args.url}/functions/v1/email-notifications"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(base, json=body) as resp:
            answer = await resp.json()
            print(resp.status, json.dumps(answer))
            if resp.status not in (200, 202):
                return 1
        for _ in range(50):
            async with session.get(f"{base}/{answer['id']}") as resp:
                state = await resp.json()
            if state["status"] not in ("queued", "sending", "failed"):
                break
            await asyncio.sleep(0.2)
        for step in state["history"]:
            print(f"  {step['status']:10} {step['detail'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
