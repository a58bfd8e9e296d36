"""The webhook pipeline's two stages measured apart: storing under wrk, then processing.

    python bench/stages.py --db postgresql                  # 3 rounds
    python bench/stages.py --db postgresql --profile store  # and cProfile's top functions
    python bench/stages.py --db postgresql --profile process

bench/webhooks.py measures the whole pipeline, where requests and processing share one process
and a busy 2-core machine moves every figure by 10-30%. This bench takes the stages apart. It
runs the service in this process with its dispatcher's loops off (VIBE_STRIPE_WORKER=false),
links `--customers` customers, then each round:

- *store*: wrk sends the same signed, distinct ~3 KB `customer.subscription.updated` events as
  bench/webhooks.py for `--seconds` (`-t2 -c16`) to the real webhook endpoint: verified, stored,
  acknowledged; nothing is processed meanwhile;
- *process*: the dispatcher processes that backlog batch after batch (`process_due`, as its
  loop does), with no load.

For each it prints the CPU per event of this process and of PostgreSQL's backends. Either stage
alone runs steadier than the pipeline, so two versions of the code compare minutes apart.
`--profile STAGE` runs that stage under cProfile, timed by this process's CPU clock (it slows
the stage: read the ranking, not the time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.harness import describe_machine, free_port, fresh_database  # noqa: E402
from bench.meters import backends, process_cpu  # noqa: E402
from bench.webhooks import SECRET, seed  # noqa: E402
from bench.wrk import run_wrk, write_events  # noqa: E402
from vibe.billing.keys import DISPATCHER  # noqa: E402
from vibe.config import Settings  # noqa: E402
from vibe.db.database import create_database  # noqa: E402
from vibe.plugins.host import build_plugin_manager  # noqa: E402
from vibe.web.app import create_app  # noqa: E402
from vibe.web.serving import settle_garbage_collector  # noqa: E402


async def process(app: web.Application) -> list[int]:
    """Batches until none is due, as the dispatcher's loop runs them; their sizes."""
    dispatcher, sizes = app[DISPATCHER], []
    while claimed := await dispatcher.process_due():
        sizes.append(claimed)
    return sizes


async def measured(stage: str, db, work):
    """`await work()` with the CPU it costs this process and the database's backends (and
    under cProfile when `--profile` names the stage); (its result, the CPU, the profile)."""
    # CPU time, not wall time: on 2 busy cores a call that wakes wrk or PostgreSQL loses the CPU
    # to them, and a wall clock would charge that wait to the call
    profile = cProfile.Profile(time.process_time) if OPTIONS.profile == stage else None
    pids = await backends(db) if db is not None else []
    before = process_cpu(os.getpid()), [process_cpu(pid) or 0.0 for pid in pids]
    if profile:
        profile.enable()
    try:
        result = await work()
    finally:
        if profile:
            profile.disable()
    # this process alone: wrk is a child of it, but not the service
    cpu = {"service": process_cpu(os.getpid()) - before[0], "database": None}
    if db is not None:  # the pool keeps its connections: the same backends before and after
        cpu["database"] = sum((process_cpu(pid) or 0.0) - was for pid, was in zip(pids, before[1]))
    return result, cpu, profile


def per_event(cpu: dict, count: int) -> tuple[float, float | None]:
    return cpu["service"] / count * 1e6, None if cpu["database"] is None else cpu["database"] / count * 1e6


def show(figures: tuple[float, float | None]) -> str:
    service, database = figures
    return f"CPU per event: this process {service:,.0f} us" + ("" if database is None else f", PostgreSQL {database:,.0f} us")


def top(profile: cProfile.Profile, count: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(r"vibe|plugins", count)
    return out.getvalue()


async def bench(kind: str, workdir: Path) -> None:
    print(f"\n== {kind}: {OPTIONS.rounds} rounds of wrk -t2 -c16 -d{OPTIONS.seconds:g}s, then processing; "
          f"{OPTIONS.customers} customers ==")
    with fresh_database(kind, workdir, OPTIONS.pg_url) as database_url:
        env = {"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET, "VIBE_DATA_DIR": str(workdir / "var"),
               "VIBE_STRIPE_WORKER": "false", "LOG_LEVEL": "WARNING"}
        settings = Settings.from_env({**os.environ, **env})
        app = create_app(settings, pm=build_plugin_manager(settings))
        runner = web.AppRunner(app, access_log=None)  # as `serve` runs it (vibe/web/serving.py)
        await runner.setup()
        settle_garbage_collector()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        db = create_database(Settings.from_env({"DATABASE_URL": database_url, "MAX_DB_CONNECTIONS": "1"}))
        await db.open()
        try:
            url = base + "/functions/v1/stripe-webhook"
            pairs = await seed(url, OPTIONS.customers)
            await process(app)
            pg = db if kind == "postgresql" else None
            figures: dict[str, list[tuple[float, float | None]]] = {"store": [], "process": []}
            for n in range(1, OPTIONS.rounds + 1):
                events_file = workdir / f"events-{n}.txt"
                prefix = write_events(events_file, OPTIONS.events, pairs, int(time.time()) + 100_000 * n, SECRET)
                wrk = {"threads": 2, "connections": 16, "seconds": OPTIONS.seconds}
                load, cpu, profile = await measured("store", pg, lambda: run_wrk(url, events_file, **wrk))
                acked = load["requests"] - load["non_2xx"]
                count = int(await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE id LIKE %s", (prefix + "%",)))
                figures["store"].append(per_event(cpu, max(1, acked)))
                print(f"  round {n} store:   {acked:,} acknowledged ({count:,} stored) in {load['duration_us'] / 1e6:.1f} s = "
                      f"{acked / (load['duration_us'] / 1e6):,.0f}/s, p50 {load['p50_us'] / 1000:.1f} ms, "
                      f"p99 {load['p99_us'] / 1000:.1f} ms, non-2xx {load['non_2xx']}; {show(figures['store'][-1])}")
                if profile:
                    print(top(profile))
                started = time.perf_counter()
                sizes, cpu, profile = await measured("process", pg, lambda: process(app))
                seconds = time.perf_counter() - started
                figures["process"].append(per_event(cpu, max(1, count)))
                print(f"  round {n} process: {count:,} events in {len(sizes)} batches (median "
                      f"{statistics.median(sizes) if sizes else 0:.0f}) in {seconds:.2f} s = {count / seconds:,.0f}/s; "
                      f"{show(figures['process'][-1])}")
                if profile:
                    print(top(profile))
            for stage, rows in figures.items():
                median = (statistics.median(r[0] for r in rows),
                          statistics.median(r[1] for r in rows) if rows[0][1] is not None else None)
                print(f"  median {stage:8} {show(median)}")
        finally:
            await db.close()
            await runner.cleanup()


async def main_async() -> None:
    print(f"bench/stages.py on {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in OPTIONS.db.split(","):
            await bench(kind, Path(tmp))


def main() -> None:
    global OPTIONS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/bench",
                        help="PostgreSQL database (default: DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/bench)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="how long wrk stores events, per round")
    parser.add_argument("--events", type=int, default=40_000, help="distinct events in a round's file (more than get sent)")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--profile", choices=("store", "process"), help="cProfile that stage, print its top functions")
    OPTIONS = parser.parse_args()
    asyncio.run(main_async())


OPTIONS: argparse.Namespace

if __name__ == "__main__":
    main()
