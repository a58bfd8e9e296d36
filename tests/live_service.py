"""`python run.py serve` as a subprocess on a free port, for the operations tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp
from conftest import ROOT, SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveService:
    def __init__(self, database_url: str, data_dir: str, *args: str, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {"PATH": os.environ["PATH"], "VIBE_DATA_DIR": data_dir, "DATABASE_URL": database_url,
                    "STRIPE_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "warning", "STRIPE_POLL_SECONDS": "0.05", **env}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "LiveService":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run.py"), "serve", "--port", str(self.port), *self.args,
            env=self.env, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status in (200, 503):
                            return self
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    raise AssertionError((await self.proc.stderr.read()).decode())
                await asyncio.sleep(0.1)
        raise AssertionError("the service did not start")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        return self.proc.returncode, err.decode()
