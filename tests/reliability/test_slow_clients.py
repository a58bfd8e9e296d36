"""Slow clients and big bodies do not starve other clients of a real `python run.py serve`."""

import asyncio
import contextlib
import io
import time

import aiohttp
import pytest
import tokens
from analytics_support import WRITE_KEY
from live_service import LiveService

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

KEEPALIVE = 1.5
EVENT = "/functions/v1/analytics-tracking/event"


async def raw(port: int, payload: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
        await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection (EOF, after any answer it chose to send)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
        return True
    except ConnectionError:
        return True  # closed with a reset: the server closed while a dripped byte was unread
    except asyncio.TimeoutError:
        return False


async def test_slow_and_big_clients_do_not_starve_the_others(env):
    server = await LiveService({**env, "ANALYTICS_WRITE_KEY": WRITE_KEY, "HTTP_KEEPALIVE_SECONDS": str(KEEPALIVE)},
                               "--shutdown-timeout", "5").start()
    conns: list[asyncio.StreamWriter] = []
    try:
        # 300 connections that never send a byte, and 5 that drip their headers a byte at a time.
        idle = [await raw(server.port) for _ in range(300)]
        drips = [await raw(server.port, b"POST /functions/v1/stripe-webhook HTTP/1.1\r\nHost: x\r\n") for _ in range(5)]
        conns += [w for _, w in idle + drips]

        async def drip(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        drippers = [asyncio.create_task(drip(w)) for _, w in drips]

        # Meanwhile ordinary clients are served, every time.
        statuses = []
        async with aiohttp.ClientSession() as session:
            for i in range(40):
                async with session.post(server.url + EVENT, headers={"X-Write-Key": WRITE_KEY},
                                        json={"event": "Still served", "user_id": "u1", "message_id": f"m{i}"}) as resp:
                    statuses.append(resp.status)
            assert statuses == [200] * 40

            # Big bodies: refused with 413 before anything is stored.
            big = b"{" + b" " * (2 * 1024 * 1024) + b"}"  # sent as a stream (io.BytesIO)
            async with session.post(server.url + "/functions/v1/stripe-webhook", data=io.BytesIO(big),
                                    headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=0"}) as r:
                assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
            async with session.post(server.url + EVENT, data=io.BytesIO(big), headers={"X-Write-Key": WRITE_KEY,
                                                                            "Content-Type": "application/json"}) as r:
                assert r.status == 413
            # Huge and numerous headers: refused by the parser.
            async with session.get(server.url + "/health", headers={"X-Big": "a" * 20000}) as r:
                assert r.status in (400, 431)
            many = {f"X-H{i}": "1" for i in range(200)}
            async with session.get(server.url + "/health", headers=many) as r:
                assert r.status in (400, 431)

        # Idle and header-dripping connections are closed after the keep-alive timeout.
        started = time.monotonic()
        closed = await asyncio.gather(*(closed_by_server(r, KEEPALIVE + 10) for r, _ in idle + drips))
        assert all(closed), f"{closed.count(False)} slow connections were never closed"
        assert time.monotonic() - started < KEEPALIVE + 10
        for task in drippers:
            task.cancel()
        await asyncio.gather(*drippers, return_exceptions=True)

        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
            params = {"name": "Still served"}
            headers = tokens.auth(tokens.service_token())
            async with session.get(server.url + "/functions/v1/analytics-tracking/metrics", params=params,
                                   headers=headers) as resp:
                body = await resp.json()
                assert resp.status == 200 and sum(b["count"] for b in body["series"]) == 40
    finally:
        for writer in conns:
            writer.close()
        await server.stop()
