"""Erasure and export (HTTP and CLI, on a running service, caches included) and retention."""

import json
import time

import tokens
from analytics_support import WRITE_KEY, at, browser, get, iso_at, post, stored
from conftest import run_cli, wait_until

PATH = "/functions/v1/analytics-tracking/users"


async def analytics_cli(env, *args):
    """`python run.py analytics ARGS`, which succeeds: its output."""
    code, out, err = await run_cli("analytics", *args, env=env)
    assert code == 0, err
    return out


async def seed(service):
    # Before signing up, the leaver browsed anonymously; then signed in with the same anonymous id.
    await post(service, "page-view", {"anonymous_id": "anon-leaver", "properties": {"path": "/"},
                                      "timestamp": at(0, 9), "message_id": "pre"}, browser())
    leaver = browser(tokens.user_token("leaver"))
    for i in range(3):
        await post(service, "event", {"event": "Read", "anonymous_id": "anon-leaver", "timestamp": at(0, 10, i),
                                      "message_id": f"leaver-{i}"}, leaver)
    await post(service, "event", {"event": "Read", "user_id": "stayer", "timestamp": at(0, 11), "message_id": "s-1"})


async def test_forget_from_the_cli_erases_at_once_on_a_running_service(start_service, env):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, ANALYTICS_ERASURE_POLL_SECONDS="0.05")
    await seed(service)
    span = {"name": "Read", "from": at(0), "to": at(1)}
    assert (await get(service, "metrics", **span))["series"] == [{"start": iso_at(0), "count": 4, "users": 2}]
    journey = await get(service, "journey/leaver")  # now cached
    assert [e["message_id"] for s in journey["sessions"] for e in s["events"]] == ["pre", "leaver-0", "leaver-1",
                                                                                  "leaver-2"]
    exported = await analytics_cli(env, "export", "leaver")
    lines = [json.loads(line) for line in exported.splitlines()]
    assert [e["message_id"] for e in lines] == ["pre", "leaver-0", "leaver-1", "leaver-2"]
    assert lines[1]["user_id"] == "leaver" and lines[0]["anonymous_id"] == "anon-leaver"

    out = await analytics_cli(env, "forget", "leaver", "--json")
    assert json.loads(out) == {"user_id": "leaver", "events_deleted": 4, "actor_rows_deleted": 8,
                               "anonymous_ids": 1}

    async def evicted():
        return (await get(service, "journey/leaver"))["sessions"] == []

    await wait_until(evicted, timeout=5)
    # Their share of distinct users is gone; the anonymous totals stay.
    assert (await get(service, "metrics", **span))["series"] == [{"start": iso_at(0), "count": 4, "users": 1}]
    assert [r["message_id"] for r in await stored(service)] == ["s-1"]
    assert await analytics_cli(env, "export", "leaver") == ""
    erasure = await service.db.fetchone("SELECT * FROM analytics_erasures")
    assert erasure["events_deleted"] == 4 and "leaver" not in erasure["user_hash"]


async def test_export_to_a_file_and_refusals(start_service, env, tmp_path):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    await seed(service)
    target = tmp_path / "stayer.jsonl"
    await analytics_cli(env, "export", "stayer", "--output", str(target))
    assert [json.loads(line)["message_id"] for line in target.read_text().splitlines()] == ["s-1"]
    code, _, err = await run_cli("analytics", "forget", "not valid", env=env)
    assert code == 1 and "USER_ID" in err


async def test_forget_and_export_over_http(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    await seed(service)
    resp = await service.client.get(f"{PATH}/leaver/events", headers=tokens.auth(tokens.user_token("leaver")))
    assert resp.status == 200 and resp.content_type == "application/x-ndjson"
    # the leaver's own export: the events sent with their id, not the anonymous one linked to it (issue 15)
    assert len((await resp.text()).splitlines()) == 3
    journey = await get(service, "journey/stayer")
    assert len(journey["sessions"]) == 1
    resp = await service.client.delete(f"{PATH}/stayer", headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 200
    assert await resp.json() == {"user_id": "stayer", "events_deleted": 1, "actor_rows_deleted": 4,
                                 "anonymous_ids": 0}
    assert (await get(service, "journey/stayer"))["sessions"] == []  # the cache was dropped at once
    span = {"name": "Read", "from": at(0), "to": at(1)}
    assert (await get(service, "metrics", **span))["series"][0]["users"] == 1
    # Back again in the same hour: counted again (the rows known to exist were forgotten too).
    await post(service, "event", {"event": "Read", "user_id": "stayer", "timestamp": at(0, 11, 30)})
    assert (await get(service, "metrics", **span))["series"][0]["users"] == 2
    resp = await service.client.delete(f"{PATH}/bad%20id", headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 400


async def test_retention_deletes_old_raw_events_and_keeps_aggregates(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, ANALYTICS_RETENTION_DAYS="30",
                                  ANALYTICS_RETENTION_INTERVAL="1")
    await post(service, "event", {"batch": [
        {"event": "Old", "user_id": "u", "timestamp": at(0), "message_id": "old"},
        {"event": "New", "user_id": "u", "timestamp": at(0), "message_id": "new"}]})
    await service.db.execute("UPDATE analytics_events SET received_at = %s WHERE message_id = 'old'",
                             (time.time() - 31 * 86400,))

    async def expired():
        return [r["message_id"] for r in await stored(service)] == ["new"]

    await wait_until(expired, timeout=5)
    series = (await get(service, "metrics", name="Old", **{"from": at(0), "to": at(1)}))["series"]
    assert series == [{"start": iso_at(0), "count": 1, "users": 1}]
