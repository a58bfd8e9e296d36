"""`python run.py serve [--workers N]`: one process, or N processes on one port.

With `--workers N` the parent applies the migrations once, then starts N worker processes that
each bind the same port with SO_REUSEPORT (the kernel spreads connections) and share the
database. SIGTERM (or SIGINT) to the parent is passed to every worker; each stops accepting,
finishes its in-flight requests and queue work within `--shutdown-timeout` (aiohttp's graceful
exit, then every cleanup context), and exits; the parent exits 0 when all did. A worker that
dies on its own is started again.

In production (`VIBE_ENV=production`) serving refuses to start while `check-config` reports an
error. With SENTRY_DSN set (and the `sentry` extra installed) errors go to Sentry.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time

from vibe import __version__
from vibe.config import Settings, ensure_webhook_secret
from vibe.ops import logs
from vibe.web import shutdown

log = logging.getLogger("vibe.serve")


def init_sentry(settings: Settings) -> None:
    if not settings.ops.sentry_dsn:
        return
    try:
        import sentry_sdk
        from sentry_sdk.integrations.aiohttp import AioHttpIntegration
    except ImportError:
        log.warning("SENTRY_DSN is set but sentry-sdk is not installed: pip install 'vibe[sentry]'")
        return
    sentry_sdk.init(dsn=settings.ops.sentry_dsn, integrations=[AioHttpIntegration()], environment=settings.env,
                    release=f"vibe@{__version__}", send_default_pii=False)


async def _serve(app, host: str, port: int, shutdown_timeout: float, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then stop: the listening socket first, the requests in
    flight within `shutdown_timeout`, then every cleanup context within SHUTDOWN_GRACE_SECONDS
    (vibe/web/shutdown.py). A stop that still overruns both (a resource that bypasses the shared
    deadline) is logged with every task's stack and abandoned, so the process always exits."""
    from aiohttp import web

    from vibe.keys import SETTINGS

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        await stopping.wait()
        log.info("stopping")
    finally:
        cleanup = asyncio.create_task(runner.cleanup(), name="vibe: stop")
        bound = shutdown_timeout + app[SETTINGS].web.shutdown_grace_seconds + 5
        done, _ = await asyncio.wait([cleanup], timeout=bound)
        if done:
            cleanup.result()
        else:
            log.error("shutdown: still not stopped after %.0f s; giving up on:\n%s", bound, shutdown.describe_all())


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop; exit at once if a task will not end even then."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()
    if left:
        _, stuck = loop.run_until_complete(asyncio.wait(left, timeout=shutdown.CANCEL_WAIT))
        if stuck:
            log.error("shutdown: exiting with tasks that did not end:\n%s",
                      "\n".join(shutdown.describe(t) for t in stuck))
            logging.shutdown()
            os._exit(1)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def run_worker(settings: Settings, host: str, port: int, shutdown_timeout: float, reuse_port: bool) -> None:
    """One serving process (the only one, or a worker started by the parent)."""
    from vibe.web.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    init_sentry(settings)
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, host, port, shutdown_timeout, reuse_port))
    finally:
        _finish(loop)


def _migrate_once(settings: Settings) -> None:
    from vibe.cli import open_database

    async def run() -> None:
        async with open_database(settings):
            pass

    asyncio.run(run())


def supervise(settings: Settings, args: argparse.Namespace) -> int:
    _migrate_once(settings)
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int) -> multiprocessing.process.BaseProcess:
        p = ctx.Process(target=run_worker, name=f"vibe-worker-{i}",
                        args=(settings, args.host, args.port, args.shutdown_timeout, True))
        p.start()
        return p

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for p in workers:
            if p.is_alive() and p.pid is not None:
                p.terminate()  # SIGTERM: aiohttp's graceful exit in the worker

    workers = [start(i) for i in range(args.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = None
    while any(p.is_alive() for p in workers):
        multiprocessing.connection.wait([p.sentinel for p in workers if p.is_alive()], timeout=0.5)
        if stopping:
            deadline = deadline or time.monotonic() + args.shutdown_timeout + 30
            if time.monotonic() > deadline:
                for p in workers:
                    if p.is_alive():
                        log.error("worker %s did not stop in time: killed", p.pid)
                        p.kill()
            continue
        for i, p in enumerate(workers):
            if not p.is_alive():
                log.error("worker %s exited with %s: starting another", p.pid, p.exitcode)
                time.sleep(0.5)
                workers[i] = start(i)
    failed = [p.exitcode for p in workers if p.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from vibe.ops.config_check import check

    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if settings.env == "production":
        errors = [r for r in check(os.environ) if r.error]
        if errors:
            print("refusing to start: the production configuration has errors "
                  "(run `python run.py check-config`):", file=sys.stderr)
            for r in errors:
                print(f"  {r.name}: {r.state}{' (' + r.note + ')' if r.note else ''}", file=sys.stderr)
            return 2
    settings, generated = ensure_webhook_secret(settings)
    where = f"http://{args.host}:{args.port}"
    if generated:
        print(f"Stripe webhook signing secret (kept in {settings.data_dir}/stripe_webhook_secret):", file=sys.stderr)
        print(f"    {settings.billing.webhook_secrets[0]}", file=sys.stderr)
        print(f"    stripe listen --forward-to {where}/functions/v1/stripe-webhook", file=sys.stderr)
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(f"vibe {__version__} on {where} ({settings.db.dialect}{workers})", file=sys.stderr)
    if args.workers > 1:
        return supervise(settings, args)
    run_worker(settings, args.host, args.port, args.shutdown_timeout, False)
    return 0
