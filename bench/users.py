#!/usr/bin/env python3
"""User management speed: check_access and get_profile for 1,000 distinct users, and the memory
of the rate limiter after 1,000,000 distinct keys.

    python bench/users.py [--db sqlite,postgresql] [--connections 32] [--requests 6000] [--runs 3]

For each database it starts `python run.py serve` on a fresh database and the bare aiohttp
handler, onboards 1,000 users (create_profile, each with its own HS256 token minted the way
Supabase mints them), then drives `check_access` and `get_profile` round-robin over the users
(every request passes the rate-limit middleware: each user stays under the free tier's
100/min) and the bare handler with the same bodies, and prints requests/s, p50, p99 and the
ratio to the bare handler (the median of --runs runs). Last, in this process, it fills a
RateLimiter with 1,000,000 distinct client keys and prints the memory it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/ (bench/email.py is not the stdlib's)

from bench.harness import (  # noqa: E402
    Load,
    bare_server,
    describe_machine,
    drive,
    free_port,
    fresh_database,
    row,
    vibe_server,
)
from vibe.config import Settings  # noqa: E402

SECRET = "bench-jwt-secret-with-at-least-thirty-two-characters"
PATH = "/functions/v1/user-management"
USERS = 1000


def token(user_id: str) -> str:
    now = int(time.time())
    return jwt.encode({"aud": "authenticated", "exp": now + 3600, "iat": now, "sub": user_id, "role": "authenticated",
                       "email": f"{user_id}@example.com", "app_metadata": {"provider": "email"}}, SECRET, "HS256")


def requests_for(users: list[str], action: str):
    bodies = {"check_access": {"resource_type": "workshop", "resource_id": "3"}, "get_profile": {}}
    headers = [{"Authorization": f"Bearer {token(u)}", "Content-Type": "application/json"} for u in users]
    body = json.dumps({"action": action, "data": bodies[action]}).encode()
    for i in itertools.count():
        yield body, headers[i % len(headers)]


def median_load(loads: list[Load]) -> Load:
    return sorted(loads, key=lambda load: load.rate)[len(loads) // 2]


async def bench_database(kind: str, connections: int, count: int, runs: int, workdir: Path) -> None:
    print(f"\n== {kind} ==")
    with fresh_database(kind, workdir) as database_url:
        env = {"DATABASE_URL": database_url, "SUPABASE_JWT_SECRET": SECRET, "VIBE_DATA_DIR": str(workdir / "var"),
               "STRIPE_WEBHOOK_SECRET": "whsec_bench",
               # This measures the actions, not the limiter: the free tier's 100 a minute per user
               # would turn the later runs into 429s.
               "RATE_LIMITS": "free=1000000,starter=1000000,pro=1000000,expert=1000000,admin=1000000"}
        port, bare_port = free_port(), free_port()
        users = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(USERS)]
        async with vibe_server(env, port) as base, bare_server(bare_port) as bare:
            onboard = iter((json.dumps({"action": "create_profile", "data": {}}).encode(),
                            {"Authorization": f"Bearer {token(u)}", "Content-Type": "application/json"}) for u in users)
            load = await drive(base + PATH, onboard, USERS, connections)
            print(row(f"create_profile x {USERS} users", load))
            for action in ("check_access", "get_profile"):
                bare_loads, vibe_loads = [], []
                for _ in range(runs):
                    bare_loads.append(await drive(bare + PATH, requests_for(users, action), count, connections))
                    vibe_loads.append(await drive(base + PATH, requests_for(users, action), count, connections))
                baseline, measured = median_load(bare_loads), median_load(vibe_loads)
                print(row(f"bare aiohttp handler, {connections} conns", baseline))
                print(row(f"{action}, {USERS} users, {connections} conns", measured,
                          f"  ({measured.rate / baseline.rate:.0%} of bare; runs "
                          f"{', '.join(f'{x.rate / b.rate:.0%}' for x, b in zip(vibe_loads, bare_loads))})"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


async def bench_rate_limit_memory(keys: int) -> None:
    from vibe.web.ratelimit import LoadMonitor, RateLimiter

    print(f"\n== rate-limit buckets: {keys:,} distinct client keys ==")
    for max_keys in (Settings().web.rate_limit_max_keys, keys):
        settings = Settings.from_env({"RATE_LIMIT_MAX_KEYS": str(max_keys)})
        gc.collect()
        before = rss_bytes()
        limiter = RateLimiter(settings, LoadMonitor(settings))
        started = time.perf_counter()
        for i in range(keys):
            limiter.hit(f"ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{i >> 24}", "anonymous")
        elapsed = time.perf_counter() - started
        gc.collect()
        grown = rss_bytes() - before
        print(f"RATE_LIMIT_MAX_KEYS={max_keys:>9,}: {len(limiter.buckets):>9,} buckets kept, RSS +{grown / 2**20:7.1f} MiB"
              f"  ({grown / len(limiter.buckets):.0f} B per bucket; {keys / elapsed:,.0f} hits/s)")
        del limiter
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6000, help="requests per run and action")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"bench/users.py on {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            asyncio.run(bench_database(kind, args.connections, args.requests, args.runs, Path(tmp)))
    asyncio.run(bench_rate_limit_memory(args.keys))


if __name__ == "__main__":
    main()
