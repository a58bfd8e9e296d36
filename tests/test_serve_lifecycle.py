"""`python run.py serve` from a new user's first hour (issue 18): a taken port is one line and
exit 2 before anything starts; SIGTERM and Ctrl-C (SIGINT to the whole process group) stop it
cleanly, with or without workers, after the request in flight; PUBLIC_URL follows `--port`;
`serve --help` shows every default."""

import asyncio
import email
import email.policy
import signal
import socket
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import tokens
from conftest import ON_POSTGRES, SECRET, run_cli, wait_until
from email_support import add_profile
from live_service import LiveService, open_db

from vibe.web.serving import GC_YOUNG_THRESHOLD, local_url

pytestmark = pytest.mark.slow

SLOW_PLUGIN = '''
import asyncio, os
from pathlib import Path
from aiohttp import web
from vibe.api import hookimpl

async def slow(request):
    Path(os.environ["SLOW_MARKER"]).touch()
    await asyncio.sleep(float(request.query["seconds"]))
    return web.json_response({"slept": request.query["seconds"], "process": os.getpid()})

@hookimpl
def register_routes(app):
    app.router.add_get("/slow", slow)
'''


def occupy() -> socket.socket:
    """A plain listening socket on a port of the system's choosing (close it after)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def tables(database_url: str) -> int:
    """How many tables the test's database has (a fresh PostgreSQL schema has none)."""
    db = await open_db(database_url)
    try:
        return await db.fetchval("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")
    finally:
        await db.close()


def assert_refused(code: int, err: str, port: int, reason: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: {reason} ("), err


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["single", "workers"])
async def test_a_taken_port_is_one_line_and_exit_2_before_anything_starts(database_url, tmp_path, workers):
    # A database nothing has migrated yet, and no webhook secret: a start would make both.
    url = database_url if ON_POSTGRES else f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {"DATABASE_URL": url, "VIBE_DATA_DIR": str(tmp_path / "var")}
    with occupy() as sock:
        port = sock.getsockname()[1]
        code, out, err = await run_cli("serve", "--port", str(port), *workers, env=env)
    assert_refused(code, err, port, "the port is taken")
    assert "--port" in err and "vibe 0." not in err and out == ""  # no banner
    assert not (tmp_path / "var" / "stripe_webhook_secret").exists()
    if ON_POSTGRES:
        assert await tables(url) == 0  # no migration, so no app start-up, no scheduler, no mail
    else:
        assert not (tmp_path / "fresh.db").exists()


async def test_a_port_held_by_a_running_vibe_with_workers_is_not_shared(database_url, tmp_path):
    """Workers share one socket bound without SO_REUSEPORT: a second vibe cannot join the port."""
    first = await LiveService.on(database_url, str(tmp_path / "var"), "--workers", "2").start()
    try:
        env = {"DATABASE_URL": database_url, "VIBE_DATA_DIR": str(tmp_path / "var2"), "STRIPE_WEBHOOK_SECRET": SECRET}
        code, _, err = await run_cli("serve", "--port", str(first.port), "--workers", "2", env=env)
        assert_refused(code, err, first.port, "the port is taken")
        async with aiohttp.ClientSession() as session, session.get(f"{first.url}/health") as resp:
            assert resp.status == 200  # the first one still serves
    finally:
        code, err = await first.stop()
    assert code == 0, err


async def test_a_host_that_is_not_this_machine_is_one_line_and_exit_2(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    code, _, err = await run_cli("serve", "--host", "203.0.113.9", "--port", "8080", env=env)  # TEST-NET-3
    assert code == 2, err
    assert err.splitlines() == [err.strip()] and err.startswith(
        "error: cannot listen on 203.0.113.9:8080: not an address of this machine ("), err
    assert not (tmp_path / "fresh.db").exists()


STOPS = [  # (signal, to the process group as a terminal's Ctrl-C does, serve's arguments)
    (signal.SIGTERM, False, ()),
    (signal.SIGINT, True, ()),
    (signal.SIGTERM, False, ("--workers", "2")),
    (signal.SIGINT, True, ("--workers", "2")),
    (signal.SIGTERM, True, ("--workers", "2")),  # systemd's KillMode=control-group
]


@pytest.mark.parametrize(("sig", "group", "args"), STOPS,
                         ids=["sigterm", "ctrl-c", "workers-sigterm", "workers-ctrl-c", "workers-sigterm-group"])
async def test_a_signal_stops_serve_cleanly_after_the_request_in_flight(database_url, tmp_path, sig, group, args):
    plugins, marker = tmp_path / "plugins", tmp_path / "in-flight"
    plugins.mkdir()
    (plugins / "slow_plugin.py").write_text(SLOW_PLUGIN)
    service = await LiveService.on(database_url, str(tmp_path / "var"), *args, "--shutdown-timeout", "10",
                                   VIBE_PLUGINS_DIRS=str(plugins), SLOW_MARKER=str(marker)).start(new_session=True)

    async def slow_request() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session, session.get(f"{service.url}/slow?seconds=1.5") as resp:
            return resp.status, await resp.json()

    request = asyncio.create_task(slow_request())
    await wait_until(lambda: asyncio.sleep(0, marker.exists()))
    started = time.monotonic()
    code, err = await service.stop(sig, timeout=30, group=group)
    status, body = await request
    assert (status, body["slept"]) == (200, "1.5"), body  # the request in flight was answered
    assert time.monotonic() - started < 10, err  # drained, not waited out
    assert code == 0, err
    assert "Traceback" not in err and "CleanupError" not in err and "KeyboardInterrupt" not in err, err
    with socket.socket() as sock:  # no process still listens (TIME_WAIT aside, as serve binds)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", service.port))


async def test_public_url_defaults_to_the_address_served_and_workers_use_it(database_url, tmp_path):
    service = await LiveService.on(database_url, str(tmp_path / "var"), "--workers", "2",
                                   SUPABASE_JWT_SECRET=tokens.JWT_SECRET, EMAIL_POLL_SECONDS="0.05").start()
    try:
        assert "PUBLIC_URL" not in service.env
        db = await open_db(database_url)
        try:
            user = await add_profile(db, f"user-{uuid.uuid4().hex[:8]}")
        finally:
            await db.close()
        body = {"user_id": user, "type": "workshop_completion", "data": {"workshop_id": "w1"}}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{service.url}/functions/v1/email-notifications", json=body,
                                    headers=tokens.auth(tokens.service_token())) as resp:
                assert resp.status == 202, await resp.text()
            outbox = Path(tmp_path / "var" / "outbox")
            await wait_until(lambda: asyncio.sleep(0, any(outbox.glob("*.eml"))), timeout=20)
            [path] = outbox.glob("*.eml")
            mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            link = mail["List-Unsubscribe"].split(">")[0].lstrip("<")
            assert link.startswith(f"{service.url}/functions/v1/email-notifications/unsubscribe?token="), link
            async with session.get(link) as resp:  # and it leads to this service's page
                assert resp.status == 200, await resp.text()
    finally:
        code, err = await service.stop()
    assert code == 0, err


def test_a_wildcard_host_gives_a_public_url_a_browser_here_reaches():
    assert local_url("0.0.0.0", 9000) == "http://localhost:9000"
    assert local_url("::", 9000) == "http://localhost:9000"
    assert local_url("::1", 9000) == "http://[::1]:9000"
    assert local_url("10.1.2.3", 9000) == "http://10.1.2.3:9000"


async def test_serve_help_shows_every_option_with_its_default(tmp_path):
    code, out, err = await run_cli("serve", "--help", env={"VIBE_DATA_DIR": str(tmp_path / "var")})
    assert code == 0, err
    text = " ".join(out.split())  # argparse wraps lines
    for option, default in [("--host HOST", "127.0.0.1"), ("--port PORT", "8080"),
                            ("--shutdown-timeout SHUTDOWN_TIMEOUT", "30.0"), ("--workers WORKERS", "1")]:
        after = text.split(option, 2)[2]  # past the usage line, to the option's own help
        assert f"(default: {default})" in after.split(" --")[0], (option, out)



GC_PLUGIN = '''
import gc, weakref
from aiohttp import web
from vibe.api import hookimpl

class Node:
    pass

async def collector(request):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after start-up: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    return web.json_response({"frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold()),
                              "cycle_collected": gone() is None})

@hookimpl
def register_routes(app):
    app.router.add_get("/gc", collector)
'''


async def test_once_started_the_long_lived_objects_leave_the_collectors_sight_and_cycles_still_go(
        database_url, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "gc_plugin.py").write_text(GC_PLUGIN)
    service = await LiveService.on(database_url, str(tmp_path / "var"), VIBE_PLUGINS_DIRS=str(plugins)).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{service.url}/gc") as resp:
            assert resp.status == 200
            state = await resp.json()
    finally:
        code, err = await service.stop(signal.SIGTERM, timeout=30)
    assert code == 0, err
    assert state["frozen"] > 10_000  # start-up's modules, classes and functions
    assert state["threshold"][0] == GC_YOUNG_THRESHOLD
    assert state["cycle_collected"]
