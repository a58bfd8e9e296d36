"""`python run.py serve` as a real process on a free port: the one live-server helper of the suite,
for the tests that need the entry point itself (the CLI, the operations tests, shutdown, and the
reliability tests that kill it, starve it or fuzz it), and a look at its database from the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from typing import Mapping

import aiohttp

from conftest import ROOT, SECRET
from vibe.config import Settings
from vibe.db.database import Database, create_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveService:
    """One `serve` process on a free port: start, stop (any signal, kill -9 too; to its whole
    process group, as Ctrl-C does), start again on the same port. Its stderr is read all along
    (the banner, and what `stop` returns). Set `port` before `start` to use another one."""

    def __init__(self, env: Mapping[str, str], *args: str):
        """`env` is the process's whole environment, besides PATH; `args` go after `serve --port N`."""
        self.port = free_port()
        self.args = args
        self.env = {"PATH": os.environ["PATH"], **env}
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._reader: asyncio.Task | None = None
        self._group = False

    @classmethod
    def on(cls, database_url: str, data_dir: str, *args: str, **env: str) -> "LiveService":
        """On this database and data folder, with the suite's webhook secret and quiet logs."""
        return cls({"VIBE_DATA_DIR": data_dir, "DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET,
                    "LOG_LEVEL": "warning", "STRIPE_POLL_SECONDS": "0.05", **env}, *args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def launch(self, *, new_session: bool = False) -> "LiveService":
        """Start `serve` and return at once. `new_session`: in a process group of its own (with
        its workers), which `stop(group=True)` signals as a terminal's Ctrl-C does."""
        self.stderr, self._group = [], new_session
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run.py"), "serve", "--port", str(self.port), *self.args,
            env=self.env, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=new_session)
        self._reader = asyncio.create_task(self._read_stderr(self.proc))
        return self

    async def start(self, timeout: float = 30.0, *, new_session: bool = False) -> "LiveService":
        """Start `serve` and return once /health answers (200, or 503 for a degraded service)."""
        await self.launch(new_session=new_session)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status in (200, 503):
                            return self
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    await self._reader
                    raise AssertionError(f"serve exited with {self.proc.returncode}: {''.join(self.stderr)}")
                await asyncio.sleep(0.05)
        raise AssertionError(f"serve did not answer /health within {timeout}s: {''.join(self.stderr)}")

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Drain stderr as it comes, so that a talkative service never blocks on a full pipe."""
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace"))

    async def banner(self, timeout: float = 30.0) -> str:
        """What `serve` printed before the line that says where it serves, and that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.stderr):
                if line.startswith("vibe ") and f":{self.port}" in line:
                    return "".join(self.stderr[:i + 1])
            await asyncio.sleep(0.02)
        raise AssertionError(f"no serving line in serve's output: {''.join(self.stderr)}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60, *, group: bool = False) -> tuple[int, str]:
        """Send `sig` (unless it has exited already), wait for the exit: (exit code, stderr). A
        process still running after `timeout` is killed, and the test fails. `group`: to its
        whole process group (started with `new_session`), as a terminal's Ctrl-C does."""
        assert self.proc is not None and self._reader is not None
        if self.proc.returncode is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        return await self.exited(timeout)

    async def exited(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the process to exit on its own: (exit code, stderr). One still running after
        `timeout` is killed, and the test fails."""
        assert self.proc is not None and self._reader is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # its workers too, when it has a group
                os.killpg(self.proc.pid, signal.SIGKILL) if self._group else self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"serve did not stop within {timeout}s: {''.join(self.stderr)}") from None
        finally:
            await self._reader
        return self.proc.returncode, "".join(self.stderr)


async def open_db(database_url: str) -> Database:
    """The service's database, opened from the test with a pool of its own: close it after."""
    db = create_database(Settings.from_env({"DATABASE_URL": database_url}))
    await db.open()
    return db


async def settle_stripe(db: Database, timeout: float = 60.0) -> None:
    """Wait until no stored Stripe event is still to be processed (the live service's dispatcher works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = await db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status IN ('pending', 'failed', 'waiting')")
        if not due:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("Stripe events still unprocessed")
