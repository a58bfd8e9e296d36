"""The monitoring commands, run against a service over HTTP (`--url`, default http://127.0.0.1:8080):

    python run.py dashboard                 one view: each function's status, latency, HTTP code
    python run.py monitor [--count N]       the same view every CHECK_INTERVAL seconds
    python run.py check all|FUNCTION        a one-line verdict per function (an unknown name: exit 2)
    python run.py test FUNCTION N           N requests to the function's health endpoint
    python run.py report [--format md|json] [--output FILE]
                                            error rates, latency percentiles, slowest routes, queues
                                            (default FILE: vibe-health-report.md in VIBE_DATA_DIR)

Exit status: 0 healthy, 1 degraded, 2 unhealthy or unreachable (the monitoring convention).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from vibe.ops import report as monitor_report
from vibe.plugins.hookspecs import hookimpl

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}
STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any] | None, float, str]:
    """(HTTP status or 0, JSON body or None, seconds, error text)."""
    start = time.perf_counter()
    try:
        async with session.get(url) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body, time.perf_counter() - start, ""
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return 0, None, time.perf_counter() - start, str(exc) or type(exc).__name__


async def survey(base: str, only: str | None = None) -> dict[str, Any]:
    """Each function's health endpoint, then the system's: what `dashboard` and `check` show."""
    base = base.rstrip("/")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        code, system, seconds, error = await fetch(session, f"{base}/health")
        names = [only] if only else sorted((system or {}).get("functions", {}))
        rows = []
        for name in names:
            c, body, s, err = await fetch(session, f"{base}/functions/v1/{name}/health")
            status = (body or {}).get("status") if c in (200, 503) else None
            rows.append({"function": name, "status": status or "unhealthy", "latency_ms": round(s * 1000, 1),
                         "http": c, "detail": err or _detail(body)})
    overall = (system or {}).get("status") if code in (200, 503) else None
    if only:
        overall = rows[0]["status"]
    return {"url": base, "status": overall or "unhealthy", "http": code, "latency_ms": round(seconds * 1000, 1),
            "error": error, "functions": rows, "health": system}


def _detail(body: dict[str, Any] | None) -> str:
    error = (body or {}).get("error") or ""
    return error.get("message", "") if isinstance(error, dict) else str(error)


def render(console: Console, view: dict[str, Any]) -> None:
    table = Table(title=f"vibe at {view['url']}", title_justify="left")
    for column in ("function", "status", "latency", "HTTP"):
        table.add_column(column, justify="right" if column in ("latency", "HTTP") else "left")
    table.add_column("detail", overflow="fold")
    for row in view["functions"]:
        table.add_row(row["function"], f"[{STYLE[row['status']]}]{row['status']}[/]", f"{row['latency_ms']} ms",
                      str(row["http"] or "-"), row["detail"])
    console.print(table)
    doc = view["health"] or {}
    if view["http"] == 0:
        console.print(f"System: [red]unreachable[/] ({view['error']})")
        return
    db, pool = doc.get("database", {}), doc.get("pool", {})
    queues = ", ".join(f"{k} {v}" for k, v in doc.get("queues", {}).items()) or "none"
    breakers = ", ".join(f"{k} {b['state']}" for k, b in doc.get("circuit_breakers", {}).items()) or "none"
    console.print(f"System: [{STYLE[view['status']]}]{view['status']}[/] (HTTP {view['http']}, {view['latency_ms']} ms) · "
                  f"version {doc.get('version')} · up {doc.get('uptime_seconds')} s")
    console.print(f"Database: {db.get('dialect')} {'reachable' if db.get('reachable') else 'UNREACHABLE'}"
                  f"{' ' + str(db.get('round_trip_ms')) + ' ms' if db.get('reachable') else ''} · pool "
                  f"{pool.get('in_use')}/{pool.get('size')} in use, {pool.get('waiting')} waiting")
    console.print(f"Queues: {queues}")
    console.print(f"Circuit breakers: {breakers}")


def cmd_dashboard(args: argparse.Namespace, settings) -> int:
    view = asyncio.run(survey(args.url))
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        render(Console(), view)
    return EXIT[view["status"]]


def cmd_monitor(args: argparse.Namespace, settings) -> int:
    console, interval, n, status = Console(), args.interval or settings.ops.check_interval, 0, "healthy"
    while args.count == 0 or n < args.count:
        if n:
            time.sleep(interval)
        view = asyncio.run(survey(args.url))
        console.rule(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        render(console, view)
        status, n = view["status"], n + 1
    return EXIT[status]


def unknown_function(view: dict, name: str, *, all_too: bool) -> bool:
    """Say so (one line) when the service answered and has no function `name` (`all` being one
    when `all_too`)."""
    known = (["all"] if all_too else []) + sorted((view["health"] or {}).get("functions") or {})
    if len(known) <= all_too or name in known:  # unknowable when unreachable
        return False
    print(f"error: no function named {name!r}; valid names: {', '.join(known)}", file=sys.stderr)
    return True


def cmd_check(args: argparse.Namespace, settings) -> int:
    view = asyncio.run(survey(args.url, None if args.target == "all" else args.target))
    if unknown_function(view, args.target, all_too=True):
        return 2
    console = Console()
    for row in view["functions"]:
        console.print(f"{row['function']:<22} [{STYLE[row['status']]}]{row['status']:<10}[/] "
                      f"{row['latency_ms']:>8} ms  HTTP {row['http'] or '-'}")
    if args.target == "all":
        console.print(f"{'system':<22} [{STYLE[view['status']]}]{view['status']}[/]")
    return EXIT[view["status"]]


async def hammer(url: str, n: int, progress: Progress | None) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    task = progress.add_task("requests", total=n) if progress else None
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for _ in range(n):
            code, _, seconds, _ = await fetch(session, url)
            results.append((code, seconds))
            if progress is not None:
                progress.advance(task)
    return results


def cmd_test(args: argparse.Namespace, settings) -> int:
    if unknown_function(asyncio.run(survey(args.url, args.function)), args.function, all_too=False):
        return 2
    url = f"{args.url.rstrip('/')}/functions/v1/{args.function}/health"
    console = Console()
    with Progress(TextColumn(f"{args.function}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        results = asyncio.run(hammer(url, args.n, progress))
    ok = [s * 1000 for code, s in results if code == 200]
    table = Table(title=f"{args.n} requests to {url}", title_justify="left")
    for column in ("succeeded", "failed", "min", "mean", "p50", "p95", "max"):
        table.add_column(column, justify="right")
    q = statistics.quantiles(ok, n=20, method="inclusive") if len(ok) > 1 else ok * 19
    table.add_row(str(len(ok)), str(len(results) - len(ok)),
                  *(f"{v:.1f} ms" for v in ((min(ok), statistics.fmean(ok), statistics.median(ok), q[18], max(ok))
                                            if ok else ())), *(["-"] * 5 if not ok else []))
    console.print(table)
    return 0 if len(ok) == len(results) else 2


def cmd_report(args: argparse.Namespace, settings) -> int:
    report = asyncio.run(monitor_report.build(args.url))
    text = json.dumps(report, indent=2) if args.format == "json" else monitor_report.markdown(report)
    output = Path(args.output) if args.output else settings.data_dir / f"vibe-health-report.{args.format}"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n", encoding="utf-8")
    print(f"{report['status']}: report written to {output.resolve()}")
    return EXIT.get(report["status"], 2)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


@hookimpl
def register_cli_commands(subparsers):
    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help)
        p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
        p.set_defaults(func=func)
        return p

    add("dashboard", cmd_dashboard, "one view of every function and the system").add_argument("--json", action="store_true")
    p = add("monitor", cmd_monitor, "the dashboard view every CHECK_INTERVAL seconds")
    p.add_argument("--interval", type=float, default=0, help="seconds between views (default CHECK_INTERVAL)")
    p.add_argument("--count", type=int, default=0, help="stop after N views (default: run until interrupted)")
    add("check", cmd_check, "check all functions, or one").add_argument("target", help="all or a function name")
    p = add("test", cmd_test, "N requests to a function's health endpoint, with latency statistics")
    p.add_argument("function")
    p.add_argument("n", type=_positive)
    p = add("report", cmd_report, "write a health report (Markdown or JSON)")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("--output", help="file to write (default: vibe-health-report.md or .json in the data folder, "
                                    "VIBE_DATA_DIR)")

