"""`python run.py COMMAND`: serve, migrate, and the commands plugins register.

Logs go to stderr; with `--json` a command prints only JSON on stdout. A configuration error is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from typing import Any, AsyncIterator, Sequence

from vibe import __version__
from vibe.config import ConfigError, Settings
from vibe.db.database import Database, DatabaseUnavailable, create_database
from vibe.db.migrations import migrate
from vibe.db.migrations import status as migration_status
from vibe.ops import logs
from vibe.plugins.host import PluginError, build_plugin_manager

log = logging.getLogger("vibe")


class CommandError(Exception):
    """A command failed in an expected way: print the message, exit 1."""


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """The database, migrated, for a command that works on it directly."""
    db = create_database(settings)
    await db.open()
    try:
        await migrate(db)
        yield db
    finally:
        await db.close()


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from vibe.web.serving import serve

    return serve(args, settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> dict:
        async with open_database(settings) as db:
            applied = await migrate(db)
            return {"applied": applied, "migrations": await migration_status(db)}

    result = asyncio.run(run())
    if args.json:
        print_json(result)
    else:
        for name in result["applied"]:
            print(f"applied {name}")
        print(f"{len(result['migrations'])} migrations recorded; the database is up to date")
    return 0


def build_parser(pm) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="vibe: billing, users, analytics and email.")
    parser.add_argument("--version", action="version", version=f"vibe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP service",
                           description="Run the HTTP service until SIGTERM or Ctrl-C. PUBLIC_URL, when unset, "
                                       "is the address it listens on.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080,
                       help="port to listen on; 0 lets the system choose (default: %(default)s)")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish at a stop (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the one listening socket; one per core (default: %(default)s)")
    serve.set_defaults(func=cmd_serve)
    mig = sub.add_parser("migrate", help="apply the sql/ migrations")
    mig.add_argument("--json", action="store_true")
    mig.set_defaults(func=cmd_migrate)
    pm.hook.register_cli_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        pm = build_plugin_manager(settings)
    except PluginError as exc:
        print(f"plugin error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(pm).parse_args(argv)
    try:
        code = int(args.func(args, settings) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader went away (`... | head -1`): what is left goes nowhere, quietly (the Python
        # docs' recipe, library/signal.html); 141 is what a shell reports for a SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, PluginError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return 3
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
