"""A test plugin folder (loaded through VIBE_PLUGINS_DIRS): `customer.updated` gets stuck.

STUCK_MODE says how: `wait` awaits for ever (a cancel ends it), `ignore` also swallows every
cancel (as Python 3.11's asyncio.wait_for can), anything else handles the event at once.
Entering the handler touches the file STUCK_MARKER, so a test knows the dispatcher is held.
"""

import asyncio
import os
from pathlib import Path

from vibe.plugins.hookspecs import hookimpl


async def customer_updated(ctx):
    mode = os.environ.get("STUCK_MODE", "")
    Path(os.environ["STUCK_MARKER"]).touch()
    if mode == "wait":
        await asyncio.Event().wait()
    while mode == "ignore":
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue
    return "handled at once"


@hookimpl
def register_stripe_handlers():
    return {"customer.updated": customer_updated}
