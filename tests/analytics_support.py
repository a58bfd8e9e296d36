"""Helpers shared by the analytics tests: the write key, a browser, the anon key, posting events,
and times (`at`: Unix seconds, as the tests send them; `iso_at`: as the answers show them)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import tokens

from vibe.web.times import iso

WRITE_KEY = "wk_test_analytics_write_key"
PREFIX = "/functions/v1/analytics-tracking"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
SERVER = {"X-Write-Key": WRITE_KEY}
DAY = 86400


def anon_key() -> str:
    """The project's anon key as a JWT (what supabase-js sends when nobody is signed in)."""
    now = int(time.time())
    return tokens.hs256({"iss": "supabase", "role": "anon", "iat": now, "exp": now + 10 * 365 * DAY})


def browser(token: str | None = None) -> dict[str, str]:
    headers = {"User-Agent": BROWSER}
    if token:
        headers.update(tokens.auth(token))
    return headers


async def post(service, endpoint: str, body: Any, headers: dict | None = None, *, status: int = 200) -> dict:
    resp = await service.client.post(f"{PREFIX}/{endpoint}", data=json.dumps(body),
                                     headers={"Content-Type": "application/json", **(headers or SERVER)})
    answer = await resp.json()
    assert resp.status == status, answer
    return answer


async def get(service, path: str, token: str | None = None, *, status: int = 200, **query) -> Any:
    resp = await service.client.get(f"{PREFIX}/{path}", params={k: str(v) for k, v in query.items()},
                                    headers=tokens.auth(token or tokens.admin_token()))
    answer = await resp.json()
    assert resp.status == status, answer
    return answer


async def stored(service, **where) -> list[dict]:
    clause = " AND ".join(f"{k} = %s" for k in where) or "1 = 1"
    return await service.db.fetchall(f"SELECT * FROM analytics_events WHERE {clause} ORDER BY ts, id",
                                     tuple(where.values()))


def at(day_index: int, hour: int = 0, minute: int = 0) -> float:
    """A fixed time: `day_index` days after a recent midnight (UTC), at hour:minute."""
    base = (int(time.time()) // DAY - 10) * DAY
    return float(base + day_index * DAY + hour * 3600 + minute * 60)


def iso_at(day_index: int, hour: int = 0, minute: int = 0) -> str:
    """`at(...)` as an answer shows it: ISO 8601."""
    return iso(at(day_index, hour, minute))


@pytest.fixture
async def analytics(start_service):
    return await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
