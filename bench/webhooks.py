"""Stripe webhooks end to end under wrk, next to a bare aiohttp handler in the same run.

    apt-get install -y wrk          # Debian's wrk 4.1 (or build https://github.com/wg/wrk)
    python bench/webhooks.py        # PostgreSQL and SQLite, 3 rounds of 8 s, 16 connections, 2 threads
    python bench/webhooks.py --db postgresql --rounds 1 --json
    python bench/webhooks.py --db postgresql --workers 2   # serve --workers 2

For each database it starts `python run.py serve` (`--workers N`: N processes on one port, the
service's CPU summed over the parent and all its descendants) on a fresh database (PostgreSQL: a schema of its
own in DATABASE_URL's database, default postgresql://postgres@127.0.0.1:5432/bench, dropped
afterwards; SQLite: a file) and bench/bare_server.py, links 200 customers to users (each a
`customer.created` and a `customer.subscription.created`), then, each round, drives both with the
same file of pre-signed, distinct ~3 KB `customer.subscription.updated` events for those 200
customers (each a new period end: every event changes its user's profile and records an
analytics event). It prints, per round and as the median of the rounds: events/s stored (2xx
answers) and processed (from the first request until no event is due), p50/p99, non-2xx answers,
whether every acknowledged event was processed with its effect exactly once (the inbox and the
analytics events, read after draining), and the CPU per event of the service process and of
PostgreSQL's backends serving it (user + system, from /proc), beside the bare handler's.

`--py-spy DIR` samples the service during each round (py-spy record, non-blocking) and prints
its top functions (wall-clock samples of a running thread: on a busy 2-core machine a system
call that wakes PostgreSQL often loses the CPU to it, which inflates the driver's calls). `--pg-log
PATH` (PostgreSQL's log file, e.g. /var/log/postgresql/postgresql-15-main.log) turns on
`log_statement_stats` for the bench's database during the run and ranks its round trips by the
CPU PostgreSQL reports for each (pg_stat_statements would need a server restart to load). Both
cost CPU of their own: take the figures from a run without them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/ (bench/email.py is not the stdlib's)

import aiohttp  # noqa: E402

from bench.harness import bare_server, describe_machine, free_port, fresh_database, vibe_server  # noqa: E402
from bench.harness import SERVER_PIDS  # noqa: E402
from bench.meters import Meter, PgStatementLog, PySpy, tree  # noqa: E402
from bench.wrk import run_wrk, write_events  # noqa: E402
from vibe.billing import signature as stripe_signature  # noqa: E402
from vibe.config import Settings  # noqa: E402
from vibe.db.database import create_database  # noqa: E402

SECRET = "whsec_bench"
PRICE = "price_ProMonthlyEUR"  # the template's price (metadata.tier = pro)
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/bench"


def say(*args, **kwargs) -> None:
    print(*args, **kwargs, file=sys.stderr if OPTIONS.json else sys.stdout, flush=True)


async def post(session: aiohttp.ClientSession, url: str, event: dict) -> None:
    body = json.dumps(event).encode()
    headers = {"Stripe-Signature": stripe_signature.sign(body, SECRET), "Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"seeding: {resp.status} {await resp.text()}")


async def seed(url: str, count: int) -> list[tuple[str, str]]:
    """`count` customers linked to new users, each with an active subscription."""
    run, now = uuid.uuid4().hex[:6], int(time.time())
    pairs = [(f"sub_{run}{i}", f"cus_{run}{i}") for i in range(count)]
    async with aiohttp.ClientSession() as session:
        for i, (sub, cus) in enumerate(pairs):
            await post(session, url, {
                "id": f"evt_seed_{run}_c{i}", "object": "event", "type": "customer.created", "created": now,
                "livemode": False, "data": {"object": {"id": cus, "object": "customer",
                                                      "email": f"learner-{run}-{i}@example.com",
                                                      "metadata": {"user_id": str(uuid.uuid4())}}}})
        for i, (sub, cus) in enumerate(pairs):
            await post(session, url, {
                "id": f"evt_seed_{run}_s{i}", "object": "event", "type": "customer.subscription.created",
                "created": now, "livemode": False, "data": {"object": {
                    "id": sub, "object": "subscription", "customer": cus, "status": "active",
                    "current_period_end": now + 86400, "items": {"data": [{"price": {
                        "id": PRICE, "unit_amount": 2900, "currency": "eur", "metadata": {"tier": "pro"},
                        "recurring": {"interval": "month"}}}]}}}})
    return pairs


async def drain(db, timeout: float = 300) -> float:
    """The time when no event is due any more (polled every 20 ms), still none 0.3 s later
    (requests wrk left in flight when it stopped are still being stored)."""
    deadline = time.perf_counter() + timeout
    done_at = None
    while time.perf_counter() < deadline:
        due = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status IN ('pending', 'failed', 'waiting') "
                                "AND next_attempt_at <= %s", (time.time(),))
        if due:
            done_at = None
        elif done_at is None:
            done_at = time.perf_counter()
        elif time.perf_counter() - done_at > 0.3:
            return done_at
        await asyncio.sleep(0.02)
    raise RuntimeError("events were not processed in time")


async def audit(db, prefix: str) -> dict:
    """The round's events by status, and its analytics events (one per processed event), read
    in one transaction."""
    async with db.transaction() as tx:
        rows = await tx.fetchall("SELECT status, COUNT(*) AS n FROM stripe_events WHERE id LIKE %s GROUP BY status",
                                 (prefix + "%",))
        effects = await tx.fetchval("SELECT COUNT(*) FROM analytics_events WHERE message_id LIKE %s",
                                    (f"subscription:{prefix}%",))
    return {"statuses": {r["status"]: int(r["n"]) for r in rows}, "analytics_events": int(effects)}


async def workers_up(base: str, workers: int, timeout: float = 60) -> None:
    """With `--workers N`, wait until the parent has its N workers (each started the app: the
    first answering /health says nothing of the others), then a second for their start-up."""
    if workers <= 1:
        return
    deadline = time.monotonic() + timeout
    while len(tree(SERVER_PIDS[base])) < workers + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)


def bare_figures(load: dict, cpu: dict) -> dict:
    seconds = load["duration_us"] / 1e6
    return {"rate": load["requests"] / seconds, "p50_ms": load["p50_us"] / 1000, "p99_ms": load["p99_us"] / 1000,
            "non_2xx": load["non_2xx"], "cpu_us": cpu["service"] / max(1, load["requests"]) * 1e6}


async def one_round(n: int, base: str, bare: str, db, pairs, workdir: Path, kind: str, profilers) -> dict:
    events_file = workdir / f"events-{n}.txt"
    created_from = int(time.time()) + 100_000 * n  # newer than every earlier round's events
    prefix = write_events(events_file, OPTIONS.events, pairs, created_from, SECRET)
    wrk = {"threads": OPTIONS.threads, "connections": OPTIONS.connections, "seconds": OPTIONS.seconds}
    meter = Meter(bare, None).start()
    bare_load = await run_wrk(bare + "/functions/v1/stripe-webhook", events_file, **wrk)
    bare_row = bare_figures(bare_load, meter.stop())
    meter = await Meter(base, db if kind == "postgresql" else None).astart()
    for profiler in profilers:
        profiler.start(n)
    started = time.perf_counter()
    load = await run_wrk(base + "/functions/v1/stripe-webhook", events_file, **wrk)
    finished = await drain(db)
    cpu = await meter.astop()
    for profiler in profilers:
        await profiler.stop()
    found = await audit(db, prefix)
    acked = load["requests"] - load["non_2xx"]
    processed = found["statuses"].get("processed", 0)
    # `stale`: a newer event about the same subscription was applied first (the ordering guard)
    handled = processed + found["statuses"].get("stale", 0)
    stored = sum(found["statuses"].values())
    vibe = {
        "stored_rate": acked / (load["duration_us"] / 1e6), "processed_rate": handled / (finished - started),
        "p50_ms": load["p50_us"] / 1000, "p99_ms": load["p99_us"] / 1000, "non_2xx": load["non_2xx"],
        "socket_errors": load["connect_errors"] + load["read_errors"] + load["write_errors"] + load["timeouts"],
        "acknowledged": acked, "stored": stored, "processed": processed, "statuses": found["statuses"],
        "analytics_events": found["analytics_events"], "duplicates_sent": load["wrapped"] > 0,
        "all_acknowledged_processed": handled >= acked and handled == stored,
        "effects_once": found["analytics_events"] == processed,
        "service_cpu_us": cpu["service"] / max(1, handled) * 1e6,
        "postgresql_cpu_us": cpu["database"] / max(1, handled) * 1e6 if cpu["database"] is not None else None,
        "drain_s": finished - started - load["duration_us"] / 1e6,
    }
    vibe["share_of_bare"] = vibe["processed_rate"] / bare_row["rate"]
    return {"bare": bare_row, "vibe": vibe}


def show_round(label: str, r: dict) -> None:
    b, v = r["bare"], r["vibe"]
    pg = f", PostgreSQL {v['postgresql_cpu_us']:,.0f} us" if v["postgresql_cpu_us"] is not None else ""
    say(f"  {label:8} bare {b['rate']:8,.0f}/s p50 {b['p50_ms']:5.1f} ms p99 {b['p99_ms']:5.1f} ms "
        f"non-2xx {b['non_2xx']}, CPU {b['cpu_us']:,.0f} us/request")
    say(f"  {'':8} vibe stored {v['stored_rate']:7,.0f}/s processed {v['processed_rate']:7,.0f}/s "
        f"({v['share_of_bare']:.1%} of bare) p50 {v['p50_ms']:5.1f} ms p99 {v['p99_ms']:5.1f} ms "
        f"non-2xx {v['non_2xx']}; CPU per event: service {v['service_cpu_us']:,.0f} us{pg}")
    ok = "yes" if v["all_acknowledged_processed"] and v["effects_once"] and not v["non_2xx"] else "NO"
    say(f"  {'':8} {v['acknowledged']:,} acknowledged, {v['stored']:,} stored: {v['statuses']}, {v['analytics_events']:,} analytics events; every acknowledged event processed "
        f"once: {ok}{'; WARNING: the events file ran out (duplicates sent): raise --events' if v['duplicates_sent'] else ''}")


def medians(rounds: list[dict]) -> dict:
    def med(side, key):
        values = [r[side][key] for r in rounds if r[side][key] is not None]
        return statistics.median(values) if values else None
    out = {f"bare_{k}": med("bare", k) for k in ("rate", "p99_ms", "cpu_us")}
    out.update({k: med("vibe", k) for k in ("stored_rate", "processed_rate", "p50_ms", "p99_ms", "service_cpu_us",
                                            "postgresql_cpu_us", "share_of_bare")})
    out["p99_ms_range"] = [min(r["vibe"]["p99_ms"] for r in rounds), max(r["vibe"]["p99_ms"] for r in rounds)]
    out["non_2xx"] = sum(r["vibe"]["non_2xx"] for r in rounds)
    out["all_acknowledged_processed"] = all(r["vibe"]["all_acknowledged_processed"] and r["vibe"]["effects_once"]
                                            for r in rounds)
    return out


async def bench_database(kind: str, workdir: Path) -> dict:
    workers = f"{OPTIONS.workers} worker process{'es' if OPTIONS.workers > 1 else ''}"
    say(f"\n== {kind}, serve --workers {OPTIONS.workers} ({workers}): {OPTIONS.rounds} rounds of wrk -t{OPTIONS.threads} -c{OPTIONS.connections} "
        f"-d{OPTIONS.seconds:g}s, {OPTIONS.customers} customers ==")
    with fresh_database(kind, workdir, OPTIONS.pg_url) as database_url:
        env = {"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET, "VIBE_DATA_DIR": str(workdir / "var"),
               **dict(item.split("=", 1) for item in OPTIONS.server_env)}
        statement_log = PgStatementLog(OPTIONS.pg_log, database_url) if OPTIONS.pg_log and kind == "postgresql" else None
        if statement_log:
            statement_log.begin()
        port, bare_port = free_port(), free_port()
        # One connection: the meter leaves out the backend asking, so the bench's own reads are
        # never counted as the service's
        db = create_database(Settings.from_env({"DATABASE_URL": database_url, "MAX_DB_CONNECTIONS": "1"}))
        await db.open()
        try:
            async with vibe_server(env, port, OPTIONS.workers) as base, bare_server(bare_port) as bare:
                await workers_up(base, OPTIONS.workers)
                pairs = await seed(base + "/functions/v1/stripe-webhook", OPTIONS.customers)
                await drain(db)
                profilers = [PySpy(base, Path(OPTIONS.py_spy), kind)] if OPTIONS.py_spy else []
                if statement_log:
                    statement_log.mark()
                rounds = []
                for n in range(1, OPTIONS.rounds + 1):
                    rounds.append(await one_round(n, base, bare, db, pairs, workdir, kind, profilers))
                    show_round(f"round {n}", rounds[-1])
                for profiler in profilers:
                    say(profiler.report())
                if statement_log:
                    events = sum(r["vibe"]["stored"] for r in rounds)
                    say(statement_log.report(events))
        finally:
            await db.close()
            if statement_log:
                statement_log.end()
    m = medians(rounds)
    pg = f", PostgreSQL {m['postgresql_cpu_us']:,.0f} us" if m["postgresql_cpu_us"] is not None else ""
    m["workers"] = OPTIONS.workers
    say(f"  median   {OPTIONS.workers} worker{'s' if OPTIONS.workers > 1 else ''}: processed {m['processed_rate']:,.0f}/s = {m['share_of_bare']:.1%} of bare "
        f"({m['bare_rate']:,.0f}/s, {m['bare_cpu_us']:,.0f} us/request); p99 {m['p99_ms_range'][0]:.1f}-"
        f"{m['p99_ms_range'][1]:.1f} ms; non-2xx {m['non_2xx']}; every acknowledged event processed once: "
        f"{'yes' if m['all_acknowledged_processed'] else 'NO'}; CPU per event: service {m['service_cpu_us']:,.0f} us{pg}")
    return {"rounds": rounds, "median": m}


def main() -> None:
    global OPTIONS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default=None, help=f"PostgreSQL database (default: DATABASE_URL, else {DEFAULT_PG})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--events", type=int, default=60_000, help="distinct events per round (more than get sent)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the service, e.g. VIBE_EMAIL_WORKER=false")
    parser.add_argument("--workers", type=int, default=1,
                        help="serve --workers N: N processes on one port (the CPU is summed over all of them)")
    parser.add_argument("--py-spy", metavar="DIR", help="profile the service with py-spy into DIR")
    parser.add_argument("--pg-log", metavar="PATH", help="PostgreSQL's log file: log and rank every statement")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    OPTIONS = parser.parse_args()
    say(f"bench/webhooks.py on {describe_machine()}")
    results = {"machine": describe_machine(), "options": {k: v for k, v in vars(OPTIONS).items() if k != "json"}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in OPTIONS.db.split(","):
            results[kind] = asyncio.run(bench_database(kind, Path(tmp)))
    if OPTIONS.json:
        print(json.dumps(results, indent=2))


OPTIONS: argparse.Namespace

if __name__ == "__main__":
    main()
