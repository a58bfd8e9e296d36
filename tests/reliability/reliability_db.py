"""Look at a live server's database from the test: open it, and wait for the Stripe inbox to drain."""

from __future__ import annotations

import asyncio
import time

from vibe.config import Settings
from vibe.db.database import Database, create_database


async def open_db(env: dict[str, str]) -> Database:
    db = create_database(Settings.from_env(env))
    await db.open()
    return db


async def settle_stripe(db: Database, timeout: float = 60.0) -> None:
    """Wait until no stored Stripe event is still to be processed (the server's dispatcher works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status IN ('pending', 'failed', 'waiting')")
        if not due:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("Stripe events still unprocessed")
