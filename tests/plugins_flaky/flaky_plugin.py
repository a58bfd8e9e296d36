"""A test plugin folder (loaded through VIBE_PLUGINS_DIRS): `customer.updated` fails on demand.

The file named by FLAKY_MARKER holds how many more calls fail ("always" for every call).
"""

import os
from pathlib import Path

from vibe.plugins.hookspecs import hookimpl


async def customer_updated(ctx):
    marker = Path(os.environ["FLAKY_MARKER"])
    remaining = marker.read_text().strip() if marker.exists() else "0"
    if remaining == "always":
        raise RuntimeError("flaky handler: always failing")
    if int(remaining) > 0:
        marker.write_text(str(int(remaining) - 1))
        raise RuntimeError(f"flaky handler: {remaining} failure(s) to go")
    await ctx.tx.execute(
        "INSERT INTO review_flags (user_id, reason, reference, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (reference) DO NOTHING",
        (None, "flaky handler succeeded", f"flaky:{ctx.event_id}", ctx.now),  # idempotent, like any handler
    )
    return "flaky handler succeeded"


@hookimpl
def register_stripe_handlers():
    return {"customer.updated": customer_updated}
