#!/usr/bin/env python3
"""Send analytics events to a running vibe, the two ways a server can.

    ANALYTICS_WRITE_KEY=... python examples/track_events.py [http://127.0.0.1:8080]

1. The functions endpoint: a batch of events with the write key in `X-Write-Key`.
2. The Segment door, with the segment-analytics-python SDK (pip install segment-analytics-python),
   unchanged but for `host`.
"""

import asyncio
import os
import sys
import time
import uuid

import aiohttp

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
KEY = os.environ.get("ANALYTICS_WRITE_KEY", "")


async def functions_door() -> None:
    now = time.time()
    batch = {"sent_at": now, "batch": [
        {"event": "Lesson Started", "user_id": "learner-1", "message_id": uuid.uuid4().hex,
         "timestamp": now - 5, "properties": {"lesson": "intro"}},
        {"event": "Lesson Finished", "properties": {"lesson": "intro"}},  # no user: rejected, the rest kept
    ]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{BASE}/functions/v1/analytics-tracking/event", json=batch,
                                headers={"X-Write-Key": KEY}) as resp:
            print(resp.status, await resp.text())
        page = {"anonymous_id": "visitor-1", "properties": {"url": "https://vibe.example/pricing"},
                "context": {"user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}}
        async with session.post(f"{BASE}/functions/v1/analytics-tracking/page-view", json=page,
                                headers={"X-Write-Key": KEY}) as resp:
            print(resp.status, await resp.text())


def segment_door() -> None:
    try:
        from segment.analytics import Client
    except ImportError:
        print("segment-analytics-python is not installed; skipping the Segment door")
        return
    client = Client(KEY, host=BASE, on_error=lambda exc, batch: print("segment error:", exc))
    client.identify("learner-1", {"plan": "pro"})
    client.track("learner-1", "Workshop Opened", {"workshop": "prompting-101"})
    client.flush()
    client.shutdown()
    print("sent 2 messages through /v1/batch")


if __name__ == "__main__":
    if not KEY:
        sys.exit("set ANALYTICS_WRITE_KEY to the service's write key")
    asyncio.run(functions_door())
    segment_door()
