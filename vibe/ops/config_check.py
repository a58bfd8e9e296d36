"""Validate the environment as a deployment would: what is set, missing or wrong.

`check(env)` returns one `Row` per variable that matters, read off the declarations in
`vibe.config.VARIABLES` (each concern's `settings.py`): every variable that is set (parsed, and
checked by its declared deployment check), and every one that is required in production or has a
check, when it is not. In production (`VIBE_ENV=production`) the billing, identity and database
variables are required, the Stripe key must be a live key and URLs must be https; elsewhere a
missing variable is only noted. `python run.py check-config` prints the rows; `serve` refuses to
start in production when any row is an error. Secrets show their kind and length only.

CORS_ALLOWED_ORIGINS's row always says which browser origins may call the API, and is a warning
(not an error) when production allows any origin (`*`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vibe.config import VARIABLES, ConfigError, Settings
from vibe.db.settings import pooler_warnings
from vibe.web import cors


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    state: str  # set, missing, wrong, unset (optional and not set), warning (set; works, but see the note)
    value: str
    note: str = ""

    @property
    def error(self) -> bool:
        return self.state in ("missing", "wrong")


def check(env: Mapping[str, str]) -> list[Row]:
    production = env.get("VIBE_ENV", "").strip().lower() == "production"
    rows: list[Row] = []
    for var in VARIABLES:
        value = env.get(var.name, "").strip()
        if not value:
            if var.required(env, production):
                rows.append(Row(var.name, "missing", "", "required in production"))
            elif var.check or var.hint or var.production:
                rows.append(Row(var.name, "unset", "", var.hint))
            continue
        try:
            var.read(env)
        except ConfigError as exc:
            rows.append(Row(var.name, "wrong", var.mask(value), str(exc).split(":", 1)[-1].strip()))
            continue
        problem = var.check(value, production) if var.check else ""
        rows.append(Row(var.name, "wrong" if problem else "set", var.mask(value), problem or var.hint))
    if not any(r.state == "wrong" for r in rows):
        try:  # what only several variables together can be wrong about (EMAIL_BACKEND=smtp, ...)
            Settings.from_env(env)
        except ConfigError as exc:
            name, _, message = str(exc).partition(":")
            var = next(v for v in VARIABLES if v.name == name)
            rows = [r for r in rows if r.name != name]
            rows.append(Row(name, "wrong", var.mask(env.get(name, "").strip()), message.strip()))
    return _cors(_warn(rows, "DATABASE_URL", pooler_warnings(env)), env, production)


CORS = "CORS_ALLOWED_ORIGINS"


def _cors(rows: list[Row], env: Mapping[str, str], production: bool) -> list[Row]:
    """The CORS row's note: the origins allowed (the default's too); `*` in production warned about."""
    var = next(v for v in VARIABLES if v.name == CORS)
    try:
        origins = var.read(env)
    except ConfigError:
        return rows  # its row says what is wrong
    note = cors.describe(origins)
    state = None
    if production and "*" in origins:
        state, note = "warning", (note + "; in production name the front end's origins "
                                  "(CORS_ALLOWED_ORIGINS=https://app.example.com)")
    return [dataclasses.replace(r, state=state or r.state, note=note) if r.name == CORS else r for r in rows]


def _warn(rows: list[Row], name: str, warnings: list[str]) -> list[Row]:
    """`name`'s row as a warning (not an error) carrying `warnings`, unless it is wrong already."""
    if not warnings:
        return rows
    return [dataclasses.replace(r, state="warning", note="; ".join(warnings))
            if r.name == name and r.state == "set" else r for r in rows]
