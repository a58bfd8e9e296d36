"""`python run.py check-config [--json]`: the environment as a deployment sees it.

A table of every variable that matters (set, missing, wrong, or optional and unset), secrets
masked, and the state of the features several variables make (geographic restrictions, which
browser origins may call); exit status 1 when any is missing or wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from rich.console import Console
from rich.table import Table

from vibe.config import markdown_table
from vibe.ops.config_check import check
from vibe.plugins.hookspecs import hookimpl
from vibe.web import cors, geo

STYLE = {"set": "green", "unset": "dim", "missing": "red", "wrong": "red", "warning": "yellow"}


def cmd_check_config(args: argparse.Namespace, settings) -> int:
    if args.table:
        sys.stdout.write(markdown_table())
        return 0
    rows = check(os.environ)
    bad = [r for r in rows if r.error]
    features = {"geographic restrictions": geo.state(settings),
                "cross-origin requests (CORS)": cors.describe(settings.web.cors_allowed_origins)}
    if args.json:
        json.dump({"ok": not bad, "environment": os.environ.get("VIBE_ENV", "development") or "development",
                   "variables": [dataclasses.asdict(r) for r in rows], "features": features}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if bad else 0
    table = Table(title=f"configuration ({os.environ.get('VIBE_ENV') or 'development'})", title_justify="left")
    for column in ("variable", "state", "value", "note"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.name, f"[{STYLE[r.state]}]{r.state}[/]", r.value, r.note)
    console = Console()
    console.print(table)
    for name, text in features.items():
        console.print(f"{name}: {text}", highlight=False)
    console.print(f"[red]{len(bad)} error(s)[/]" if bad else "[green]configuration OK[/]")
    return 1 if bad else 0


@hookimpl
def register_cli_commands(subparsers):
    p = subparsers.add_parser("check-config", help="validate the environment (exit 1 on an error)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--table", action="store_true",
                   help="print every variable as the README's configuration table, from the declarations")
    p.set_defaults(func=cmd_check_config)
