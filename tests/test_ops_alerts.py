"""The alert watchdog against a local receiver: sent once on crossing, once on clearing, quiet in
the cooldown, and a dead target never hurts the service."""

import asyncio

from conftest import wait_until
from ops_support import TroublePlugin

from vibe.ops.keys import WATCHDOG


def fast(url: str, **extra: str) -> dict[str, str]:
    return {"ALERT_WEBHOOK": url, "ALERT_CHECK_SECONDS": "0.02", "ALERT_MIN_REQUESTS": "5",
            "ALERT_ERROR_RATE": "0.5", **extra}


async def checks_pass(service, n: int = 2) -> None:
    """Wait until the watchdog has run `n` more checks."""
    start = service.app[WATCHDOG].checks

    async def done():
        return service.app[WATCHDOG].checks >= start + n
    await wait_until(done)


async def test_error_rate_alert_fires_once_clears_once_and_cooldown_keeps_a_flap_quiet(start_service, receiver):
    received, url = receiver
    service = await start_service(extra_plugins=(TroublePlugin(),), **fast(url, ALERT_COOLDOWN_SECONDS="3600"))
    for _ in range(6):
        assert (await service.client.get("/test/boom")).status == 500
    await wait_until(lambda: asyncio.sleep(0, bool(received)))
    await checks_pass(service, 3)
    assert [(m["alert"], m["state"]) for m in received] == [("errors", "firing")]
    assert "Error rate" in received[0]["text"] and received[0]["text"].startswith(":rotating_light:")
    for _ in range(10):
        assert (await service.client.get("/test/slow", params={"s": "0"})).status == 200
    await wait_until(lambda: asyncio.sleep(0, len(received) == 2))
    assert received[1]["alert"] == "errors" and received[1]["state"] == "resolved"
    for _ in range(20):  # crosses again within the cooldown: no new message, nor its clearing
        await service.client.get("/test/boom")
    await checks_pass(service, 3)
    assert service.app[WATCHDOG].active == {"errors": False}
    assert len(received) == 2


async def test_latency_and_dead_letters_alert(start_service, receiver):
    received, url = receiver
    service = await start_service(extra_plugins=(TroublePlugin(),), **fast(url, ALERT_P95_SECONDS="0.03"))
    for _ in range(5):
        await service.client.get("/test/slow", params={"s": "0.05"})
    await service.db.execute(
        "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, status, attempts) "
        "VALUES ('evt_dead', 'x.y', 1, FALSE, '{}', 1, 'dead', 8)")
    await wait_until(lambda: asyncio.sleep(0, len(received) >= 2))
    assert {m["alert"] for m in received} == {"latency", "dead_letters:stripe_dead"}
    await service.db.execute("DELETE FROM stripe_events")
    await wait_until(lambda: asyncio.sleep(0, any(m["state"] == "resolved" for m in received)))
    assert [m["alert"] for m in received if m["state"] == "resolved"] == ["dead_letters:stripe_dead"]


async def test_a_dead_alert_target_never_hurts_the_service(start_service, unused_tcp_port):
    service = await start_service(extra_plugins=(TroublePlugin(),),
                                  **fast(f"http://127.0.0.1:{unused_tcp_port}/hook"))
    for _ in range(6):
        await service.client.get("/test/boom")
    watchdog = service.app[WATCHDOG]
    await wait_until(lambda: asyncio.sleep(0, watchdog.failures >= 1))
    await checks_pass(service, 2)
    assert watchdog.sent == 0 and "errors" in watchdog.active
    assert (await service.client.get("/health")).status == 200


async def test_database_down_is_one_alert_not_one_per_function(start_service, receiver):
    received, url = receiver
    service = await start_service(**fast(url))
    await service.db.close()
    await wait_until(lambda: asyncio.sleep(0, bool(received)))
    await checks_pass(service, 2)
    assert [(m["alert"], m["state"]) for m in received] == [("database", "firing")]
    assert "unreachable" in received[0]["text"]
    await service.db.open()
    await wait_until(lambda: asyncio.sleep(0, len(received) == 2))
    assert (received[1]["alert"], received[1]["state"]) == ("database", "resolved")
