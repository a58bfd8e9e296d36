"""`python run.py serve` as a real process, for the tests that kill it, starve it or fuzz it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp
from conftest import ROOT, SECRET
from live_service import free_port

from vibe.billing import signature as stripe_signature

WRITE_KEY = "wk_reliability_write_key"



class LiveServer:
    """One `serve` process on a free port; start, kill -9, start again on the same port."""

    def __init__(self, env: dict[str, str], port: int | None = None):
        self.env = {**os.environ, "ANALYTICS_WRITE_KEY": WRITE_KEY, **env}
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> "LiveServer":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "run.py", "serve", "--port", str(self.port), "--shutdown-timeout", "5",
            cwd=ROOT, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(int(timeout / 0.05)):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"serve exited with {self.proc.returncode}")
                try:
                    async with session.get(self.base + "/health") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("serve did not become healthy")

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                await self.kill()


def signed(event: dict, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": stripe_signature.sign(body, secret), "Content-Type": "application/json"}
