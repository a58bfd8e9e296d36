#!/usr/bin/env python3
"""Analytics ingestion throughput: committed events over loopback, against a bare aiohttp handler.

    python bench/analytics.py [--db sqlite,postgresql] [--batches 1500] [--singles 30000]

For each database it starts `python run.py serve` on a fresh database (PostgreSQL from
DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test, in a schema of its own), and a
bare aiohttp handler, and drives both with the same client:

* batches of 100 distinct events (`{"batch": [...]}`) from 8 connections;
* single events from 64 connections.

Every vibe answer counted is a 200 sent after the events' COMMIT (group commit). It prints
requests/s, events/s, p50 and p99. The machine is shared: run it a few times, keep the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/ (bench/email.py is not the stdlib's)

from bench.harness import (  # noqa: E402
    bare_server,
    describe_machine,
    drive,
    free_port,
    fresh_database,
    lines,
    row,
    vibe_server,
)

WRITE_KEY = "wk_bench"
PATH = "/functions/v1/analytics-tracking/event"
HEADERS = {"X-Write-Key": WRITE_KEY, "Content-Type": "application/json"}


def event(run: str, n: int) -> dict:
    return {"event": "Lesson Viewed", "user_id": f"learner-{n % 5000}", "message_id": f"{run}-{n}",
            "properties": {"lesson": f"l{n % 40}", "path": "/course/intro"}}


def batches(run: str):
    return lines(lambda i: (json.dumps({"batch": [event(run, i * 100 + k) for k in range(100)]}).encode(), HEADERS))


def singles(run: str):
    return lines(lambda i: (json.dumps(event(run, i)).encode(), HEADERS))


async def measure(base: str, args: argparse.Namespace, label: str) -> None:
    run = uuid.uuid4().hex[:8]
    await drive(base + PATH, singles(run + "w"), 200, 8)  # warm up connections and the pool
    load = await drive(base + PATH, batches(run), args.batches, 8)
    print(row(f"{label} batch of 100 x 8 conns", load, f"  {load.rate * 100:,.0f} events/s"), flush=True)
    load = await drive(base + PATH, singles(run), args.singles, 64)
    print(row(f"{label} single event x 64 conns", load), flush=True)


async def main(args: argparse.Namespace) -> None:
    print(describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            with fresh_database(kind, Path(tmp)) as url:
                env = {"DATABASE_URL": url, "VIBE_DATA_DIR": tmp, "ANALYTICS_WRITE_KEY": WRITE_KEY,
                       "STRIPE_WEBHOOK_SECRET": "whsec_bench", "VIBE_STRIPE_WORKER": "false",
                       "ANALYTICS_RETENTION_DAYS": "0"}
                port = free_port()
                async with vibe_server(env, port) as base:
                    await measure(base, args, f"vibe {kind}")
            port = free_port()
            async with bare_server(port) as base:
                await measure(base, args, "bare aiohttp")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--batches", type=int, default=1500, help="requests of 100 events")
    parser.add_argument("--singles", type=int, default=30000, help="single-event requests")
    asyncio.run(main(parser.parse_args()))
