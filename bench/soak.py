#!/usr/bin/env python3
"""Soak: a bounded mixed load at 70% of the measured maximum, for minutes, then an audit.

    python bench/soak.py [--minutes 10] [--db postgresql|sqlite] [--workers 1|2] [--fraction 0.7]
                         [--calibrate-seconds 20] [--rate N]

It starts `python run.py serve` on a fresh database (PostgreSQL from DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test, in a schema of its own); with `--workers 2`, two
`serve` processes on two ports against that one database, the load split between them. It
onboards 300 learners, then:

1. measures the maximum: the realistic mix from 32 closed-loop connections for
   `--calibrate-seconds` (or takes `--rate`);
2. holds `--fraction` of it, open loop (requests are started on a schedule whatever the
   latency, at most 512 in flight), for `--minutes`, printing every minute the throughput,
   p50/p99 per function, errors and each server's RSS;
3. audits the database: every acknowledged Stripe event processed once, one payment per paid
   invoice, every acknowledged analytics event stored once, every queued email sent once, and
   (with 2 workers) how the shared queues were split between the processes.

The mix: 40% user actions (check_access, get_profile, sync_progress), 35% analytics batches
of 5 events, 15% signed Stripe events (a customer, then their paid invoice; 1 in 10 delivered
twice), 10% email requests (when the email function is installed). Rate limits are raised for
the run: the soak measures the service, not the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import sys
import tempfile
import time
from pathlib import Path

# The project root, not bench/, first on the path: bench/email.py would shadow the stdlib's email.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp  # noqa: E402

from bench.harness import ROOT, describe_machine, free_port, fresh_database  # noqa: E402
from bench.soak_mix import Mix  # noqa: E402
from vibe.config import Settings  # noqa: E402
from vibe.db.database import create_database  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.asynccontextmanager
async def servers(env: dict[str, str], count: int):
    """`count` serve processes on one database, started one after the other (the first applies
    the migrations); yields [(base_url, pid)]."""
    procs, bases = [], []
    full_env = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "warning", **env}
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(count):
                port = free_port()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port), env=full_env,
                    cwd=str(ROOT), stderr=asyncio.subprocess.DEVNULL)
                procs.append(proc)
                bases.append(f"http://127.0.0.1:{port}")
                for _ in range(600):
                    if proc.returncode is not None:
                        raise RuntimeError(f"serve on {bases[-1]} exited with {proc.returncode}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(bases[-1] + "/health") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(f"{bases[-1]} did not start")
        yield list(zip(bases, (p.pid for p in procs)))
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            await proc.wait()


def report(label: str, mix: Mix, elapsed: float, pids: list[int]) -> None:
    total = sum(len(v) for v in mix.latencies.values())
    rss = " ".join(f"{rss_mb(pid):.0f}" for pid in pids)
    print(f"{label}: {total / elapsed:7.1f} HTTP req/s (2xx)  errors {sum(mix.errors.values())}  RSS MB [{rss}]", flush=True)
    for name in sorted(mix.latencies):
        lat = sorted(mix.latencies[name])
        if lat:
            p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            print(f"    {name:16} {len(lat) / elapsed:7.1f}/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
                  f"  errors {mix.errors.get(name, 0)}", flush=True)
    mix.reset_window()


async def closed_loop(mix: Mix, seconds: float, connections: int) -> float:
    deadline = time.monotonic() + seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await mix.one()
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return count / (time.monotonic() - started)


async def open_loop(mix: Mix, rate: float, minutes: float, pids: list[int]) -> None:
    in_flight: set[asyncio.Task] = set()
    limit = asyncio.Semaphore(512)
    interval = 1.0 / rate
    started = time.monotonic()
    window = started
    end = started + minutes * 60
    minute = 0

    async def run_one() -> None:
        try:
            await mix.one()
        finally:
            limit.release()

    for n in itertools.count():
        due = started + n * interval
        now = time.monotonic()
        if due >= end:
            break
        if due > now:
            await asyncio.sleep(due - now)
        if time.monotonic() - window >= 60:
            minute += 1
            report(f"minute {minute:2}", mix, time.monotonic() - window, pids)
            window = time.monotonic()
        await limit.acquire()
        task = asyncio.create_task(run_one())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    report(f"minute {minute + 1:2}", mix, time.monotonic() - window, pids)


async def main(args: argparse.Namespace) -> None:
    print(describe_machine(), f"| db {args.db} | workers {args.workers}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db, Path(tmp)) as url:
        env = {"DATABASE_URL": url, "VIBE_DATA_DIR": tmp, **Mix.server_env()}
        async with servers(env, args.workers) as running:
            pids = [pid for _, pid in running]
            connector = aiohttp.TCPConnector(limit=600)
            async with aiohttp.ClientSession(connector=connector) as session:
                mix = Mix(session, [base for base, _ in running], random.Random(7))
                mix.outbox_dir = str(Path(tmp) / "outbox")
                await mix.onboard(300)
                print(f"functions in the mix: {', '.join(mix.functions())}", flush=True)
                mix.reset_totals()
                if args.rate:
                    maximum = args.rate / args.fraction
                else:
                    maximum = await closed_loop(mix, args.calibrate_seconds, 32)
                    requests = (mix.total_ok + mix.total_errors) / args.calibrate_seconds
                    report(f"calibration ({args.calibrate_seconds:.0f} s, 32 connections)", mix,
                           args.calibrate_seconds, pids)
                    print(f"maximum: {maximum:.0f} operations/s ({requests:.0f} HTTP requests/s; a new paying "
                          f"customer is 2 or 3 Stripe requests)", flush=True)
                target = maximum * args.fraction
                print(f"holding {target:.0f} operations/s ({args.fraction:.0%}) for {args.minutes} min", flush=True)
                mix.reset_totals()
                await open_loop(mix, target, args.minutes, pids)
                print(f"total: {mix.total_ok} answered 2xx, {mix.total_errors} errors", flush=True)
                await mix.audit(create_database(Settings.from_env({**env, "LOG_LEVEL": "warning"})))
                for base, pid in running:
                    async with session.get(base + "/health") as resp:
                        health = await resp.json()
                    print(f"server {base} (pid {pid}): Stripe events it processed "
                          f"{health.get('stripe_events_processed')}, RSS {rss_mb(pid):.0f} MB", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--calibrate-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0, help="hold this many requests/s (skip calibration)")
    asyncio.run(main(parser.parse_args()))
