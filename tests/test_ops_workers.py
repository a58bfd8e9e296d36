"""`serve --workers 2`: both processes answer on one port; SIGTERM mid-flood loses nothing acknowledged."""

import asyncio
import signal

import aiohttp
import pytest
from conftest import make_event, signed
from live_service import LiveService, open_db

pytestmark = pytest.mark.slow


async def flood(url: str, acked: list[str], refused: list[str], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        n = 0
        while not stop.is_set():
            n += 1
            event = make_event("customer.created", {"id": f"cus_{id(acked)}_{n}", "object": "customer"})
            body, headers = signed(event)
            try:
                async with session.post(f"{url}/functions/v1/stripe-webhook", data=body, headers=headers) as resp:
                    if resp.status == 200:
                        acked.append(event["id"])
                    else:
                        refused.append(event["id"])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                refused.append(event["id"])
                await asyncio.sleep(0.01)


async def test_sigterm_during_a_flood_loses_nothing_acknowledged(database_url, tmp_path):
    service = await LiveService.on(database_url, str(tmp_path / "var"), "--workers", "2",
                                   "--shutdown-timeout", "10").start()
    pids = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(600):  # a new connection each time: the kernel spreads them over the workers
            async with session.get(f"{service.url}/health") as resp:
                pids.add((await resp.json())["process"])
            if len(pids) == 2:  # the second worker may still be starting when the first answers
                break
            await asyncio.sleep(0.02)
    assert len(pids) == 2
    acked: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()
    posters = [asyncio.create_task(flood(service.url, acked, refused, stop)) for _ in range(6)]
    while len(acked) < 150:
        await asyncio.sleep(0.02)
        assert not any(p.done() for p in posters)
    code, err = await service.stop(signal.SIGTERM)
    stop.set()
    await asyncio.gather(*posters)
    assert code == 0, err
    assert "Traceback" not in err, err

    db = await open_db(database_url)
    try:
        stored = {r["id"] for r in await db.fetchall("SELECT id FROM stripe_events")}
    finally:
        await db.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events were lost"
    assert len(acked) >= 150
