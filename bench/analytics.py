#!/usr/bin/env python3
"""Analytics ingestion benchmark: `python bench/analytics.py [--seconds 10]`.

Starts `python run.py serve` as a subprocess on a free port (SQLite in a temporary folder, and
PostgreSQL in a fresh schema when DATABASE_URL=postgresql://... is set), and a bare aiohttp
handler (parse the JSON, answer 200) in another subprocess, then drives each over loopback:

* batches of 100 events from 8 connections;
* single events from 64 connections.

It prints requests/s, events/s, p50 and p99 latency per target. Every vibe answer counted is a
200 whose events were committed (group commit). Figures on a shared machine are noisy: run it a
few times and keep the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "wk_bench"
PATH = "/functions/v1/analytics-tracking/event"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bare_server(port: int) -> None:
    """The baseline: an aiohttp handler that parses the body and answers, storing nothing."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        events = body["batch"] if "batch" in body else [body]
        return web.json_response({"accepted": len(events)})

    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/health", lambda request: web.json_response({"status": "healthy"}))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def start(args: list[str], env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, env={**os.environ, **env},
                                                stdout=asyncio.subprocess.DEVNULL)
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
    raise SystemExit(f"{' '.join(args)} did not start")


async def drive(port: int, connections: int, batch: int, seconds: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}{PATH}"
    latencies: list[float] = []
    events = errors = 0
    counter = itertools.count()
    run = uuid.uuid4().hex[:8]
    deadline = time.perf_counter() + seconds

    def body() -> bytes:
        items = [{"event": "Bench", "user_id": f"u{n % 5000}", "message_id": f"{run}-{n}",
                  "properties": {"path": "/bench", "n": n}} for n in itertools.islice(counter, batch)]
        return json.dumps(items[0] if batch == 1 else {"batch": items}).encode()

    async def worker() -> None:
        nonlocal events, errors
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.perf_counter() < deadline:
                data = body()
                started = time.perf_counter()
                async with session.post(url, data=data, headers={"X-Write-Key": WRITE_KEY,
                                                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - started)
                        events += batch
                    else:
                        errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rps": len(latencies) / elapsed, "eps": events / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "errors": errors}


def postgres_schema(url: str) -> tuple[str, str]:
    import psycopg2

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


async def main(args: argparse.Namespace) -> None:
    scenarios = [("batch of 100 x 8 conns", 8, 100), ("single event x 64 conns", 64, 1)]
    targets: list[tuple[str, list[str], dict[str, str]]] = []
    tmp = tempfile.TemporaryDirectory()
    port = free_port()
    targets.append(("bare aiohttp", [sys.executable, __file__, "--bare-server", str(port)], {}))
    base_env = {"ANALYTICS_WRITE_KEY": WRITE_KEY, "LOG_LEVEL": "warning", "VIBE_STRIPE_WORKER": "false",
                "ANALYTICS_RETENTION_DAYS": "0"}
    targets.append(("vibe sqlite", [], {**base_env, "DATABASE_URL": f"sqlite:///{tmp.name}/bench.db",
                                          "VIBE_DATA_DIR": tmp.name}))
    pg_url = os.environ.get("DATABASE_URL", "")
    schema = None
    if pg_url.startswith(("postgresql://", "postgres://")):
        schema, url = postgres_schema(pg_url)
        targets.append(("vibe postgresql", [], {**base_env, "DATABASE_URL": url, "VIBE_DATA_DIR": tmp.name}))
    print(f"{'target':18} {'scenario':26} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    try:
        for name, command, env in targets:
            port = free_port() if command == [] else port
            command = command or [sys.executable, "run.py", "serve", "--port", str(port)]
            proc = await start(command, env, port)
            try:
                for label, connections, batch in scenarios:
                    r = await drive(port, connections, batch, args.seconds)
                    print(f"{name:18} {label:26} {r['rps']:9.0f} {r['eps']:10.0f} {r['p50']:8.1f} {r['p99']:8.1f} "
                          f"{r['errors']:6d}", flush=True)
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        if schema:
            drop_schema(pg_url, schema)
        tmp.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario and target")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.bare_server:
        bare_server(arguments.bare_server)
    else:
        asyncio.run(main(arguments))
