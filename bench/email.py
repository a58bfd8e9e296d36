"""Email throughput: queue 10,000 messages over HTTP, send them through the SMTP sender to a local
SMTP server (aiosmtpd, in a process of its own), and print messages/s end to end, the queue's p50/p99
wait (queued -> claimed for sending), and the POST latencies next to a bare aiohttp handler
measured in the same run. Checks that no message arrived twice.

    python bench/email.py                      # SQLite in a temporary folder
    DATABASE_URL=postgresql://... python bench/email.py   # PostgreSQL, in a schema of its own
    python bench/email.py --messages 2000 --concurrency 32
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called email.py: keep its folder off the import path, or `import email` (the
# standard library's, which aiohttp needs) would import this script instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-jwt-secret-with-at-least-32-characters"
BARE = """
import sys
from aiohttp import web
async def handle(request):
    await request.read()
    return web.json_response({"id": 1, "status": "queued"}, status=202)
app = web.Application()
app.router.add_post("/", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


SINK = """
import asyncio, sys, time
from aiosmtpd.smtp import SMTP

class Sink:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        for line in envelope.content.split(b"\\r\\n"):
            if line.lower().startswith(b"message-id:") or not line:
                self.out.write(f"{time.time()} {line[11:].strip().decode()}\\n")
                self.out.flush()
                break
        return "250 OK"

async def main(port, path):
    with open(path, "a") as out:
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(Sink(out), hostname="bench.local"), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def received(path: Path) -> list[tuple[float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stamp, _, message_id = line.partition(" ")
        out.append((float(stamp), message_id))
    return out


def database(args) -> tuple[str, callable]:
    """A fresh database URL and a function that drops it afterwards."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg2

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(url)
        conn.autocommit = True
        conn.cursor().execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in url else "?"

        def drop():
            conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()

        return f"{url}{sep}options=-csearch_path%3D{schema}", drop
    return f"sqlite:///{args.tmp / 'bench.db'}", lambda: None


def seed_profiles(url: str, users: int) -> None:
    rows = [(f"bench-{i}", f"learner{i}@example.com", f"Learner {i}", time.time(), time.time()) for i in range(users)]
    sql = "INSERT INTO profiles (id, email, full_name, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)"
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        conn.executemany(sql.replace("%s", "?"), rows)
        conn.commit()
        conn.close()
    else:
        import psycopg2

        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.executemany(sql, rows)
        conn.close()


async def wait_ready(url: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"the service exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the service did not start")


async def post_all(url: str, bodies: list[dict], headers: dict, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(reversed(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def client():
            while queue:
                body = queue.pop()
                start = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status not in (200, 202):
                        raise SystemExit(f"POST answered {resp.status}: {await resp.text()}")
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


async def queue_waits(url: str) -> list[float]:
    from vibe.config import Settings
    from vibe.db.database import create_database

    db = create_database(Settings.from_env({"DATABASE_URL": url}))
    await db.open()
    try:
        rows = await db.fetchall(
            "SELECT m.id, m.created_at, MIN(e.at) AS claimed FROM email_messages m "
            "JOIN email_message_events e ON e.email_id = m.id AND e.status = 'sending' GROUP BY m.id, m.created_at"
        )
        return [float(r["claimed"]) - float(r["created_at"]) for r in rows]
    finally:
        await db.close()


async def bench(args) -> None:
    smtp_port = free_port()
    log_path = args.tmp / "received.txt"
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(smtp_port), str(log_path)])
    url, drop = database(args)
    env = {**os.environ, "DATABASE_URL": url, "VIBE_DATA_DIR": str(args.tmp / "data"), "LOG_LEVEL": "warning",
           "EMAIL_BACKEND": "smtp", "EMAIL_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
           "EMAIL_CONCURRENCY": str(args.senders), "VIBE_EMAIL_SCHEDULER": "false", "EMAIL_POLL_SECONDS": "0.2",
           "SUPABASE_JWT_SECRET": JWT_SECRET, "STRIPE_WEBHOOK_SECRET": "whsec_bench"}
    subprocess.run([sys.executable, "run.py", "migrate"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    users = max(1, args.messages // 10)
    seed_profiles(url, users)
    port, bare_port = free_port(), free_port()
    service = subprocess.Popen([sys.executable, "run.py", "serve", "--port", str(port)], cwd=ROOT, env=env)
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)])
    try:
        await wait_ready(f"http://127.0.0.1:{port}/health", service)
        await wait_ready(f"http://127.0.0.1:{bare_port}/", bare)
        now = int(time.time())
        token = jwt.encode({"role": "service_role", "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}"}
        bodies = [{"user_id": f"bench-{i % users}", "type": "payment_confirmation",
                   "data": {"amount": 1000 + i, "currency": "usd"}, "idempotency_key": f"bench-{i}"}
                  for i in range(args.messages)]
        bare_seconds, bare_lat = await post_all(f"http://127.0.0.1:{bare_port}/", bodies, {}, args.concurrency)
        started = time.time()
        queue_seconds, lat = await post_all(f"http://127.0.0.1:{port}/functions/v1/email-notifications", bodies,
                                            headers, args.concurrency)
        deadline = time.monotonic() + args.timeout
        while len(received(log_path)) < args.messages and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
        arrivals = received(log_path)
        total = max(t for t, _ in arrivals) - started
        waits = await queue_waits(url)
    finally:
        for proc in (service, bare, sink):  # the service first: it drains its sends into the sink
            proc.terminate()
            await asyncio.to_thread(proc.wait, 60)
        drop()
    dialect = "postgresql" if url.startswith("postgres") else "sqlite"
    ids = [message_id for _, message_id in arrivals]
    unique = len(set(ids))
    print(f"email bench on {dialect}: {args.messages} messages, {args.concurrency} HTTP clients, "
          f"{args.senders} SMTP connections")
    print(f"  bare aiohttp POST      {args.messages / bare_seconds:8.0f} req/s   p50 {pct(bare_lat, .5) * 1000:6.1f} ms"
          f"   p99 {pct(bare_lat, .99) * 1000:6.1f} ms")
    print(f"  queue POST (202)       {args.messages / queue_seconds:8.0f} req/s   p50 {pct(lat, .5) * 1000:6.1f} ms"
          f"   p99 {pct(lat, .99) * 1000:6.1f} ms")
    print(f"  end to end (SMTP)      {len(ids) / total:8.0f} msg/s   ({len(ids)} received in {total:.1f} s)")
    print(f"  queue wait (queued -> sending)   p50 {pct(waits, .5) * 1000:8.1f} ms   p99 {pct(waits, .99) * 1000:8.1f} ms")
    print(f"  received {len(ids)}, distinct Message-IDs {unique}: "
          + ("no message sent twice" if unique == len(ids) == args.messages else "MISMATCH"))
    if unique != len(ids) or unique != args.messages:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP clients queueing at once")
    parser.add_argument("--senders", type=int, default=16, help="EMAIL_CONCURRENCY: SMTP connections")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the child processes on the way out
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="vibe-email-bench-") as tmp:
        args.tmp = Path(tmp)
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
