"""`python run.py serve [--workers N]`: one process, or N processes on one listening socket.

The port is bound first, without SO_REUSEPORT, before anything starts (app, workers, banner):
a taken port, a host not of this machine, a privileged port is one line and exit 2. With
`--workers N` the parent migrates once, then hands the socket to N spawned workers, which all
accept from its one queue; one that dies on its own is started again on the same socket.

SIGTERM and SIGINT (Ctrl-C reaches the whole process group) stop it once: a single process at
the first signal; with workers the parent alone, which SIGTERMs each worker (they ignore SIGINT
from birth). Each stops accepting, finishes in-flight requests within `--shutdown-timeout`,
then every cleanup context within SHUTDOWN_GRACE_SECONDS; the parent exits 0 when all did.

PUBLIC_URL, when unset, is the address served (`http://localhost:N` for a wildcard host). In
production serving refuses to start while `check-config` reports an error; with SENTRY_DSN set
(and the `sentry` extra installed) errors go to Sentry.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time

from vibe import __version__
from vibe.config import Settings, ensure_jwt_secret, ensure_webhook_secret
from vibe.ops import logs
from vibe.web import shutdown

log = logging.getLogger("vibe.serve")

BACKLOG = 128  # aiohttp's default
# The young generation's threshold (CPython's default is 700 allocations): a request allocates a
# few hundred objects, almost all gone when it ends; at 700 the collector ran every other request.
GC_YOUNG_THRESHOLD = 20_000
WILDCARDS = ("", "0.0.0.0", "::")
BIND_PROBLEMS = {errno.EADDRINUSE: "the port is taken", errno.EACCES: "permission denied",
                 errno.EADDRNOTAVAIL: "not an address of this machine"}


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


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on every address `host` names (as asyncio's `create_server` would, but
    never with SO_REUSEPORT). Raises OSError (socket.gaierror for an unknown host)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, not a second listener
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # one port for every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_problem(host: str, port: int, exc: OSError) -> str:
    """The one line that says why `serve` cannot listen."""
    detail = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        what = "unknown host"
    else:
        what = BIND_PROBLEMS.get(exc.errno or 0, "the system refused")
    hint = {errno.EADDRINUSE: "; stop what holds it or choose another --port",
            errno.EACCES: "; ports below 1024 need privileges"}.get(exc.errno or 0, "")
    return f"error: cannot listen on {address(host, port)}: {what} ({detail}){hint}"


def local_url(host: str, port: int) -> str:
    """The address a browser on this machine reaches `serve` at."""
    host = "localhost" if host in WILDCARDS else host
    return f"http://{address(host, port)}"


async def _serve(app, socks: list[socket.socket], shutdown_timeout: float, stopping: asyncio.Event) -> None:
    """Serve until `stopping` is set, then stop: the listening socket first, the requests in
    flight within `shutdown_timeout`, then every cleanup context within SHUTDOWN_GRACE_SECONDS
    (vibe/web/shutdown.py). A stop that still overruns both (a resource that bypasses the shared
    deadline) is logged with every task's stack and abandoned, so the process always exits."""
    from aiohttp import web

    from vibe.keys import SETTINGS

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    settle_garbage_collector()
    try:
        for sock in socks:
            await web.SockSite(runner, sock).start()
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


def settle_garbage_collector() -> None:
    """Once started: what start-up built (modules, the stripe library, plugins, templates,
    settings: a few hundred thousand objects that live as long as the process) is moved out of
    the collector's sight (`gc.freeze`), so a full collection no longer walks it (100 ms pauses
    under load, the webhooks' p99, before), and young collections run less often. Cycles that
    requests make are still collected."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_worker(settings: Settings, socks: list[socket.socket], shutdown_timeout: float, *,
               worker: bool = False) -> None:
    """One serving process on listening sockets: the only one, or (`worker`) one the parent
    started, which stops on the parent's SIGTERM only."""
    from vibe.web.app import create_app

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stopping = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():  # a worker also gets the group's SIGTERM (systemd's default): no news
            log.log(logging.INFO if worker else logging.WARNING, "%s: already stopping (in-flight work has "
                    "up to %g s)", sig.name, shutdown_timeout)
        stopping.set()

    # before the app is built, so that a signal during start-up is a stop too, not a traceback
    for sig in (signal.SIGTERM,) if worker else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        logs.configure(settings.log_level, settings.log_format)
        init_sentry(settings)
        app = create_app(settings)
        loop.run_until_complete(_serve(app, socks, shutdown_timeout, stopping))
    finally:
        _finish(loop)


def _worker_main(settings: Settings, socks: list[socket.socket], shutdown_timeout: float) -> None:
    """A worker process's entry. It was born with SIGINT blocked (see `_spawn`): ignore it for
    good (which drops one already pending), then let signals in again."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    run_worker(settings, socks, shutdown_timeout, worker=True)


def _spawn(ctx, i: int, settings: Settings, socks: list[socket.socket], shutdown_timeout: float):
    """Start worker `i`. SIGINT is blocked while it starts: the child inherits the mask, so a
    Ctrl-C during its interpreter's start-up waits (and is then ignored) instead of raising
    KeyboardInterrupt there; in the parent it is delivered once the mask is restored."""
    p = ctx.Process(target=_worker_main, name=f"vibe-worker-{i}", args=(settings, socks, shutdown_timeout))
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        p.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return p


def _migrate_once(settings: Settings) -> None:
    from vibe.cli import open_database

    async def run() -> None:
        async with open_database(settings):
            pass

    asyncio.run(run())


def supervise(settings: Settings, socks: list[socket.socket], args: argparse.Namespace) -> int:
    ctx = multiprocessing.get_context("spawn")
    workers: list[multiprocessing.process.BaseProcess] = []
    told: set[int] = set()
    stopping = False

    def tell_all() -> None:
        """SIGTERM, once, to every worker started (aiohttp's graceful exit in each)."""
        for p in workers:
            if p.pid is not None and p.pid not in told and p.is_alive():
                told.add(p.pid)
                p.terminate()

    def stop(signum, _frame) -> None:
        nonlocal stopping
        if stopping:
            log.warning("%s: already stopping", signal.Signals(signum).name)
            return
        stopping = True
        tell_all()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # asyncio.run below leaves a handler that is not the default alone
    _migrate_once(settings)
    for i in range(args.workers):
        if stopping:
            break
        workers.append(_spawn(ctx, i, settings, socks, args.shutdown_timeout))
    deadline = None
    while any(p.is_alive() for p in workers):
        multiprocessing.connection.wait([p.sentinel for p in workers if p.is_alive()], timeout=0.5)
        if stopping:
            if socks:  # the workers hold their own; once they close theirs, the port is free
                for sock in socks:
                    sock.close()
                socks = []
            tell_all()  # one started while the signal came
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
                workers[i] = _spawn(ctx, i, settings, socks, args.shutdown_timeout)
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
    # The port first: nothing has started yet when it cannot be had.
    try:
        socks = listen(args.host, args.port)
    except OSError as exc:
        print(bind_problem(args.host, args.port, exc), file=sys.stderr)
        return 2
    port = socks[0].getsockname()[1]  # the one the system chose, for --port 0
    where, local = f"http://{address(args.host, port)}", local_url(args.host, port)
    if not os.environ.get("PUBLIC_URL", "").strip():
        settings = dataclasses.replace(settings, public_url=local)

    # Secrets made up for local development, each said once.
    settings, generated = ensure_webhook_secret(settings)
    if generated:
        print(f"Stripe webhook signing secret (kept in {settings.data_dir}/stripe_webhook_secret):", file=sys.stderr)
        print(f"    {settings.billing.webhook_secrets[0]}", file=sys.stderr)
        print(f"    stripe listen --forward-to {local}/functions/v1/stripe-webhook", file=sys.stderr)
    settings, generated = ensure_jwt_secret(settings)
    if generated:
        print(f"User tokens: HS256 with the secret kept in {settings.data_dir}/supabase_jwt_secret; "
              "`python run.py token USER_ID` makes one", file=sys.stderr)

    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(f"vibe {__version__} on {where} ({settings.db.dialect}{workers})", file=sys.stderr)
    if args.workers > 1:
        return supervise(settings, socks, args)
    run_worker(settings, socks, args.shutdown_timeout)
    return 0
