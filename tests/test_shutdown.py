"""Shutdown is bounded (issue 20): `serve` stops within SHUTDOWN_GRACE_SECONDS even when a
background task is stuck, says which task and where, and loses nothing it acknowledged."""

import asyncio
import logging
import signal
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import (
    ROOT,
    LogsAfterStop,
    make_event,
    postgres_only,
    signed,
    stop_services,
    wait_until,
)
from live_service import LiveService, open_db

from vibe.config import Settings
from vibe.db.database import create_database
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager
from vibe.web.app import create_app

STUCK_DIR = str(ROOT / "tests" / "plugins_stuck")
GRACE = 1.5


def stuck_service(database_url: str, tmp_path, mode: str) -> LiveService:
    return LiveService.on(database_url, str(tmp_path / "var"), VIBE_PLUGINS_DIRS=STUCK_DIR, STUCK_MODE=mode,
                          STUCK_MARKER=str(tmp_path / "entered"), SHUTDOWN_GRACE_SECONDS=str(GRACE),
                          LOG_LEVEL="info")


async def post(service: LiveService, event: dict) -> None:
    body, headers = signed(event)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service.url}/functions/v1/stripe-webhook", data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()


async def hold_the_dispatcher(database_url: str, tmp_path, mode: str) -> tuple[LiveService, dict]:
    service = await stuck_service(database_url, tmp_path, mode).start()
    event = make_event("customer.updated", {"id": "cus_stuck", "object": "customer", "email": "s@x.test"})
    await post(service, event)
    await wait_until(lambda: asyncio.sleep(0, (tmp_path / "entered").exists()))
    return service, event


async def stop_timed(service: LiveService) -> tuple[int, str, float]:
    start = time.monotonic()
    code, err = await service.stop(signal.SIGTERM, timeout=60)
    return code, err, time.monotonic() - start


async def event_status(database_url: str, event_id: str) -> str:
    db = await open_db(database_url)
    try:
        return await db.fetchval("SELECT status FROM stripe_events WHERE id = %s", (event_id,))
    finally:
        await db.close()


@pytest.mark.slow
async def test_a_stuck_handler_is_logged_cancelled_and_shutdown_ends_within_the_grace(database_url, tmp_path):
    service, event = await hold_the_dispatcher(database_url, tmp_path, "wait")
    code, err, took = await stop_timed(service)
    assert code == 0, err
    # the in-flight phase (no requests: at once), then the grace, then the cancel: a few seconds,
    # where an unbounded shutdown waited for ever
    assert took < GRACE + 5, (took, err)
    assert f"stripe dispatcher still running after SHUTDOWN_GRACE_SECONDS={GRACE:g}; cancelling" in err, err
    assert "stuck_plugin.py" in err and "in customer_updated" in err, err  # where it was stuck
    assert "did not end when cancelled" not in err, err

    # Nothing acknowledged is lost: the event's transaction rolled back, it is still due, and
    # the next start (with a handler that answers) processes it.
    assert await event_status(database_url, event["id"]) in ("pending", "failed")
    again = await stuck_service(database_url, tmp_path, "off").start()
    try:
        async def processed() -> bool:
            return await event_status(database_url, event["id"]) == "processed"
        await wait_until(processed, timeout=20)
    finally:
        code, err = await again.stop()
    assert code == 0, err


@pytest.mark.slow
async def test_a_task_that_ignores_its_cancel_still_lets_the_process_exit(database_url, tmp_path):
    service, _ = await hold_the_dispatcher(database_url, tmp_path, "ignore")
    code, err, took = await stop_timed(service)
    assert took < GRACE + 10, (took, err)
    assert "stripe dispatcher still running after SHUTDOWN_GRACE_SECONDS" in err, err
    assert "stripe dispatcher did not end when cancelled; left behind" in err, err
    assert "exiting with tasks that did not end" in err, err
    assert code == 1, err  # said, and not a clean stop


class Careless:
    """A plugin whose resource starts a task and does not stop it (`leaks`), or lets it log
    once the app has stopped (`logs`)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.task: asyncio.Task | None = None

    @hookimpl
    def register_routes(self, app):
        stopped = asyncio.Event()

        async def run():
            if self.kind == "leaks":
                await asyncio.sleep(3600)
            await stopped.wait()
            await asyncio.sleep(0.3)  # past the app's whole shutdown, within the guard's settling time
            logging.getLogger("careless").warning("still here after the stop")

        async def careless_ctx(app):
            self.task = asyncio.create_task(run(), name=f"careless-{self.kind}")
            yield
            stopped.set()  # and returns at once, without waiting for the task

        app.cleanup_ctx.append(careless_ctx)


async def guard_verdict(env, kind: str) -> str:
    """What the test fixture's guard says when a service with a careless plugin stops."""
    before, late = asyncio.all_tasks(), LogsAfterStop()
    logging.getLogger().addHandler(late)
    plugin = Careless(kind)
    settings = Settings.from_env(env)
    client = TestClient(TestServer(create_app(settings, pm=build_plugin_manager(settings, extra=(plugin,)))))
    await client.start_server()
    try:
        with pytest.raises(AssertionError) as failure:
            await stop_services([client], before, late)
        return str(failure.value)
    finally:
        logging.getLogger().removeHandler(late)
        plugin.task.cancel()
        await asyncio.wait([plugin.task])


async def test_the_suite_fails_a_test_whose_service_leaves_a_task_running(env):
    verdict = await guard_verdict(env, "leaks")
    assert "tasks still running after the services stopped" in verdict
    assert "careless-leaks" in verdict and "in run" in verdict


async def test_the_suite_fails_a_test_whose_service_logs_after_its_stop(env):
    verdict = await guard_verdict(env, "logs")
    assert "logged after the services stopped" in verdict and "still here after the stop" in verdict


@postgres_only
async def test_a_unit_of_work_cancelled_at_any_point_gives_its_connection_back(database_url):
    """The leak behind the hang: a cancel landing as a connection was handed out, or while BEGIN
    was on its way, left the connection "in use" for ever, and the pool's close waited for it."""
    db = create_database(Settings.from_env({"DATABASE_URL": database_url}))  # a pool of its own
    await db.open()

    async def work():
        while True:
            async with db.transaction() as tx:
                await tx.fetchall("SELECT 1 AS one")

    for i in range(200):
        task = asyncio.create_task(work())
        await asyncio.sleep((i % 20) * 0.0005)  # land the cancel at a different point each time
        task.cancel()
        await asyncio.wait([task], timeout=5)
        assert task.done(), "the unit of work did not end when cancelled"
        assert db.pool_state()["in_use"] == 0, f"a connection was left in use after cancel {i}"
    async with asyncio.timeout(10):
        await db.close()
