#!/usr/bin/env python3
"""Stripe webhook throughput: signed, distinct events over loopback, stored AND processed.

    python bench/webhooks.py [--db sqlite,postgresql] [--connections 16,64] [--events 12000]

For each database it starts `python run.py serve` on a fresh database and a bare aiohttp
handler, drives both with the same client at each concurrency, and prints events/s (HTTP
answers), p50 and p99, then the rate at which the events were stored *and processed* (time from
the first request until no event is pending), and the ratio to the bare handler. The events are a
realistic mix: per synthetic learner a customer.created (links a new profile), a
customer.subscription.created (sets the tier) and an invoice.payment_succeeded (records money).
PostgreSQL comes from DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test; a schema
of its own, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/ (bench/email.py is not the stdlib's)

from bench.harness import (  # noqa: E402
    CpuSplit,
    Load,
    bare_server,
    describe_machine,
    drive,
    free_port,
    fresh_database,
    row,
    vibe_server,
)
from vibe.billing import signature as stripe_signature  # noqa: E402
from vibe.config import Settings  # noqa: E402
from vibe.db.database import create_database  # noqa: E402

SECRET = "whsec_bench"
PRICE = "price_bench_pro"


def events_for(n: int, run: str) -> list[bytes]:
    """Three signed-to-be events for learner n."""
    now = int(time.time())
    customer = f"cus_{run}{n}"
    user = f"bench-{run}-{n}"
    objects = [
        ("customer.created", {"id": customer, "object": "customer", "email": f"{user}@example.com",
                              "metadata": {"user_id": user}}),
        ("customer.subscription.created", {
            "id": f"sub_{run}{n}", "object": "subscription", "customer": customer, "status": "active",
            "cancel_at_period_end": False, "current_period_end": now + 30 * 86400, "metadata": {},
            "items": {"data": [{"price": {"id": PRICE, "unit_amount": 1500, "currency": "usd",
                                          "recurring": {"interval": "month"}}}]}}),
        ("invoice.payment_succeeded", {
            "id": f"in_{run}{n}", "object": "invoice", "customer": customer, "amount_paid": 1500,
            "currency": "usd", "payment_intent": f"pi_{run}{n}", "subscription": f"sub_{run}{n}"}),
    ]
    return [json.dumps({"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": t, "created": now + i,
                        "livemode": False, "api_version": "2025-03-31.basil", "data": {"object": o}}).encode()
            for i, (t, o) in enumerate(objects)]


def signed(bodies: list[bytes]):
    ts = int(time.time())
    for body in bodies:
        yield body, {"Stripe-Signature": f"t={ts},v1={stripe_signature.compute(body, ts, SECRET)}",
                     "Content-Type": "application/json"}


async def wait_processed(database_url: str, total: int, timeout: float = 120) -> float:
    """Seconds until `total` events are out of `pending` (polled every 20 ms)."""
    db = create_database(Settings.from_env({"DATABASE_URL": database_url}))
    await db.open()
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            done = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status <> 'pending'")
            if done >= total:
                bad = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status NOT IN ('processed')")
                if bad:
                    print(f"  warning: {bad} events not processed cleanly")
                return time.perf_counter()
            await asyncio.sleep(0.02)
        counts = await db.fetchall("SELECT status, COUNT(*) AS n FROM stripe_events GROUP BY status")
        raise RuntimeError(f"events were not processed in time: {counts}")
    finally:
        await db.close()


async def bench_database(kind: str, connections: list[int], count: int, workdir: Path,
                         server_env: dict[str, str]) -> None:
    print(f"\n== {kind} ==")
    with fresh_database(kind, workdir) as database_url:
        env = {"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_PRICE_TIERS": f"{PRICE}=pro",
               "VIBE_DATA_DIR": str(workdir / "var"), **server_env}
        port, bare_port = free_port(), free_port()
        stored = 0
        async with vibe_server(env, port) as base, bare_server(bare_port) as bare:
            for n in connections:
                run = uuid.uuid4().hex[:6]
                bodies = list(itertools.chain.from_iterable(events_for(i, run) for i in range(count // 3)))
                split = CpuSplit(bare).start()
                baseline: Load = await drive(bare + "/functions/v1/stripe-webhook", signed(bodies), len(bodies), n)
                bare_cpu = split.stop(len(bodies))
                split = CpuSplit(base).start()
                started = time.perf_counter()
                load = await drive(base + "/functions/v1/stripe-webhook", signed(bodies), len(bodies), n)
                stored += len(bodies)
                finished = await wait_processed(database_url, stored)
                vibe_cpu = split.stop(len(bodies))
                processed_rate = len(bodies) / (finished - started)
                print(row(f"bare aiohttp handler, {n} connections", baseline))
                print(row(f"vibe webhook, {n} connections", load,
                          f"  ({load.rate / baseline.rate:.0%} of bare)"))
                print(f"{'  stored and processed':38} {processed_rate:9,.0f}/s  "
                      f"({len(bodies)} events, all processed {finished - started:.2f} s after the first request)")
                if vibe_cpu and bare_cpu:
                    print(f"{'  CPU per event, service':38} {vibe_cpu['service']:9,.0f} us  (bare handler "
                          f"{bare_cpu['service']:,.0f} us: {vibe_cpu['service'] / bare_cpu['service']:.1f}x; "
                          "all the service's work, storing to processed)")
                    print(f"{'  CPU per event, database and rest':38} {vibe_cpu['rest']:9,.0f} us  (bare run "
                          f"{bare_cpu['rest']:,.0f} us); this client {vibe_cpu['client']:,.0f} us "
                          f"(bare run {bare_cpu['client']:,.0f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--events", type=int, default=12000, help="events per concurrency level")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the service, e.g. VIBE_EMAIL_WORKER=false")
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    print(f"bench/webhooks.py on {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            asyncio.run(bench_database(kind, [int(c) for c in args.connections.split(",")], args.events, Path(tmp),
                                       server_env))


if __name__ == "__main__":
    main()
