"""Times at the HTTP edge (issue 13, docs/architecture.md "Times").

vibe keeps times as Unix seconds inside (columns, hooks, Stripe's own fields). Its HTTP answers
give them as ISO 8601 UTC strings, as Supabase rows are (`2026-12-02T01:59:32Z`; milliseconds
only when the time has a fraction: `2026-12-02T01:59:32.250Z`). Inputs accept both, through
`to_seconds` or the validation kind `time` (vibe.web.validation). A Stripe object vibe echoes
keeps Stripe's Unix seconds.

    iso(1764640772)                  # "2025-12-02T01:59:32Z"
    with_iso(row, "created_at")      # a copy of row with those keys as ISO strings
    to_seconds("2026-12-02T01:59:32+01:00")  # 1796173172.0
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable, Mapping

# The latest time vibe accepts (the start of the year 3000), as the analytics model always had.
LATEST = 32503680000.0

# The JSON Schema of a time in an answer, and of one in a request (both forms).
SCHEMA: dict[str, Any] = {"type": "string", "format": "date-time",
                          "description": "ISO 8601, UTC (2026-12-02T01:59:32Z)"}
INPUT_SCHEMA: dict[str, Any] = {"type": ["string", "number"],
                                "description": "ISO 8601 (UTC when no zone is given) or Unix seconds"}


def iso(seconds: float | int | None) -> str | None:
    """Unix seconds as ISO 8601 UTC; None stays None."""
    if seconds is None:
        return None
    seconds = float(seconds)
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if seconds.is_integer():
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def with_iso(row: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of `row` whose `keys` (those present and not already strings) are ISO strings."""
    out = dict(row)
    for key in keys:
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = iso(value)
    return out


def all_iso(rows: Iterable[Mapping[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [with_iso(row, *keys) for row in rows]


def to_seconds(value: Any) -> float:
    """ISO 8601 (a zone is optional: UTC is assumed) or Unix seconds -> Unix seconds.
    Raises ValueError with a short reason ("is not an ISO 8601 time", "is out of range")."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 time or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        seconds = parsed.timestamp()
    else:
        raise ValueError("must be an ISO 8601 time or Unix seconds")
    if not math.isfinite(seconds) or not 0 <= seconds < LATEST:
        raise ValueError("is out of range")
    return seconds
