"""An acknowledged event is committed: it survives a kill -9 of the service right after the 2xx."""

import asyncio
import os
import signal
import sys

import aiohttp
import pytest
from analytics_support import PREFIX, WRITE_KEY
from conftest import ROOT
from live_service import free_port

from vibe.config import Settings
from vibe.db.database import create_database


@pytest.mark.slow
async def test_every_acknowledged_event_survives_kill_9(env):
    port = free_port()
    server_env = {**os.environ, **env, "ANALYTICS_WRITE_KEY": WRITE_KEY, "ANALYTICS_BATCH_WAIT_MS": "5"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "run.py", "serve", "--port", str(port), cwd=ROOT, env=server_env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(base + "/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the service did not start")

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
            proc.send_signal(signal.SIGKILL)  # while requests are still in flight
            await proc.wait()
            await asyncio.gather(*workers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    db = create_database(Settings.from_env(env))
    await db.open()
    try:
        rows = await db.fetchall("SELECT message_id FROM analytics_events")
    finally:
        await db.close()
    stored = {r["message_id"] for r in rows}
    assert len(acknowledged) >= 300
    assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged events were lost"
