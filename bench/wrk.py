"""Driving a server with wrk (https://github.com/wg/wrk; Debian: `apt-get install wrk`): a file of
pre-signed, distinct Stripe events and the Lua script that posts them (bench/webhooks.lua).

wrk is a C client: about 60 us of CPU a request here, where a Python client spent 250-360 us and
capped the bare handler at a fraction of its rate. The events are built from one template (a
~3 KB `customer.subscription.updated`, examples/stripe/), so a round of 150,000 distinct events is
a file of a few MB and the Lua script joins each body as it sends it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from pathlib import Path

from vibe.billing import signature as stripe_signature

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "webhooks.lua"
_FIELD = re.compile(r'"?@@(\w+)@@"?')


def template() -> tuple[list[str], list[str]]:
    """The parts of a `customer.subscription.updated` body and the names of the fields between
    them (EVT, CREATED, SUB, CUS, END: event id, time, subscription, customer, period end)."""
    event = json.loads((ROOT / "examples" / "stripe" / "customer.subscription.created.json").read_text())
    event.update(id="@@EVT@@", type="customer.subscription.updated", created="@@CREATED@@",
                 api_version="2025-03-31.basil")
    sub = event["data"]["object"]
    sub.update(id="@@SUB@@", customer="@@CUS@@", current_period_end="@@END@@", latest_invoice=None)
    sub["items"]["data"][0]["subscription"] = "@@SUB@@"
    event["data"]["previous_attributes"] = {"current_period_end": "@@PREV@@"}
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    pieces = _FIELD.split(text)  # text, name, text, name, ..., text
    return pieces[0::2], pieces[1::2]


def write_events(path: Path, count: int, customers: list[tuple[str, str]], created_from: int,
                 secret: str) -> str:
    """`count` distinct signed events for `customers` ((subscription, customer) pairs), in turn;
    customer k's n-th event is `created` at `created_from + n`. Returns the events' id prefix."""
    parts, names = template()
    prefix = f"evt_b{uuid.uuid4().hex[:8]}_"
    stamp = int(time.time())
    lines = [str(len(parts)), *parts]
    for i in range(count):
        sub, cus = customers[i % len(customers)]
        created = created_from + i // len(customers)
        values = {"EVT": f'"{prefix}{i}"', "CREATED": str(created), "SUB": f'"{sub}"', "CUS": f'"{cus}"',
                  "END": str(created + 30 * 86400), "PREV": str(created + 30 * 86400 - 1)}
        fields = [values[name] for name in names]
        body = "".join(p + f for p, f in zip(parts, [*fields, ""])).encode()
        header = f"t={stamp},v1={stripe_signature.compute(body, stamp, secret)}"
        lines.append("\t".join([header, *fields]))
    path.write_text("\n".join(lines) + "\n")
    return prefix


async def run_wrk(url: str, events_file: Path, *, threads: int, connections: int, seconds: float) -> dict:
    """wrk's figures as the Lua script's `done` prints them (latencies in microseconds)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian), or build it from "
                         "https://github.com/wg/wrk")
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT), url,
        "--", str(events_file), str(threads), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    for line in reversed(out.decode().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"wrk printed no figures (exit {proc.returncode}): {(out + err).decode()[-500:]}")
