"""An acknowledged event is committed: it survives a kill -9 of the service right after the 2xx."""

import asyncio
import signal

import aiohttp
import pytest
from analytics_support import PREFIX, WRITE_KEY
from live_service import LiveService, open_db


@pytest.mark.slow
async def test_every_acknowledged_event_survives_kill_9(env):
    server = await LiveService({**env, "ANALYTICS_WRITE_KEY": WRITE_KEY, "ANALYTICS_BATCH_WAIT_MS": "5"}).start()
    base = server.url
    acknowledged: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def sender(worker: int) -> None:
                for i in range(10_000):
                    message_id = f"k9-{worker}-{i}"
                    body = {"event": "Durable", "user_id": f"u{worker}", "message_id": message_id}
                    try:
                        async with session.post(f"{base}{PREFIX}/event", json=body,
                                                headers={"X-Write-Key": WRITE_KEY}) as resp:
                            if resp.status == 200:
                                acknowledged.append(message_id)
                    except aiohttp.ClientError:
                        return  # the service is gone

            workers = [asyncio.create_task(sender(w)) for w in range(16)]
            while len(acknowledged) < 300:
                await asyncio.sleep(0.001)
            await server.stop(signal.SIGKILL)  # while requests are still in flight
            await asyncio.gather(*workers)
    finally:
        await server.stop(signal.SIGKILL)
    db = await open_db(env["DATABASE_URL"])
    try:
        rows = await db.fetchall("SELECT message_id FROM analytics_events")
    finally:
        await db.close()
    stored = {r["message_id"] for r in rows}
    assert len(acknowledged) >= 300
    assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged events were lost"
