"""What every benchmark needs: start servers as separate processes, drive them over loopback,
and print figures. Benchmarks print; they never assert on time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import aiohttp
import psycopg2

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, base: str | None = None) -> Iterator[str]:
    """A DATABASE_URL for an empty database: a SQLite file, or a new PostgreSQL schema (in
    `base`, else DATABASE_URL's database, else the `test` database)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        return
    base = base or os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


SERVER_PIDS: dict[str, int] = {}  # base URL -> process id of the server `server()` started


def cpu_seconds(base: str) -> float | None:
    """User + system CPU seconds the server behind `base` has used so far (Linux /proc), else
    None. Unlike a rate, it hardly moves when other work shares the machine."""
    try:
        fields = Path(f"/proc/{SERVER_PIDS[base]}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (KeyError, OSError, IndexError, ValueError):
        return None


def machine_cpu_seconds() -> float | None:
    """CPU seconds every core has spent busy so far (Linux /proc/stat), else None."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


class CpuSplit:
    """Where the CPU went between `start()` and `stop(events)`: the service, this client, and the
    rest of the machine (the database, mostly), in microseconds per event."""

    def __init__(self, base: str):
        self.base = base

    def start(self) -> "CpuSplit":
        self._readings = (cpu_seconds(self.base), machine_cpu_seconds(), sum(os.times()[:2]))
        return self

    def stop(self, events: int) -> dict[str, float] | None:
        after = (cpu_seconds(self.base), machine_cpu_seconds(), sum(os.times()[:2]))
        if None in self._readings or None in after or not events:
            return None
        service, machine, client = ((b - a) / events * 1e6 for a, b in zip(self._readings, after))
        return {"service": service, "client": client, "rest": max(0.0, machine - service - client)}


@contextlib.asynccontextmanager
async def server(args: list[str], env: dict[str, str], port: int) -> AsyncIterator[str]:
    """Run `python ARGS` until /health (or /) answers; yield its base URL."""
    full_env = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "warning", **env}
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, env=full_env, cwd=str(ROOT),
                                                stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(base + "/health") as resp:
                        if resp.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"server {args} did not start")
        SERVER_PIDS[base] = proc.pid
        yield base
    finally:
        SERVER_PIDS.pop(base, None)
        proc.terminate()
        await proc.wait()


def vibe_server(env: dict[str, str], port: int, workers: int = 1):
    """`python run.py serve` (with `--workers N`, N > 1: a parent and N worker processes)."""
    args = [str(ROOT / "run.py"), "serve", "--port", str(port)]
    return server(args + (["--workers", str(workers)] if workers > 1 else []), env, port)


def bare_server(port: int):
    return server([str(ROOT / "bench" / "bare_server.py"), str(port)], {}, port)


class Load:
    """Latencies and throughput of one run."""

    def __init__(self, latencies: list[float], elapsed: float, errors: int):
        self.latencies = sorted(latencies)
        self.elapsed = elapsed
        self.errors = errors

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        return self.latencies[min(len(self.latencies) - 1, int(p / 100 * len(self.latencies)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


async def drive(url: str, requests: Iterator[tuple[bytes, dict[str, str]]], count: int, concurrency: int,
                method: str = "POST") -> Load:
    """Send `count` requests from `concurrency` connections; a non-2xx answer counts as an error."""
    latencies: list[float] = []
    errors = 0
    remaining = count
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                body, headers = next(requests)
                start = time.perf_counter()
                async with session.request(method, url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Load(latencies, elapsed, errors)


def row(label: str, load: Load, extra: str = "") -> str:
    return (f"{label:38} {load.rate:9,.0f}/s  p50 {load.p50:7.2f} ms  p99 {load.pct(99):7.2f} ms"
            f"  errors {load.errors}{extra}")


def describe_machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def lines(gen: Callable[[int], tuple[bytes, dict[str, str]]]) -> Iterator[tuple[bytes, dict[str, str]]]:
    i = 0
    while True:
        yield gen(i)
        i += 1
