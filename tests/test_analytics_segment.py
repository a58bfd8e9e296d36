"""The Segment door, with the real segment-analytics-python client and by hand."""

import asyncio
import base64
import datetime
import gzip
import json

import pytest
from analytics_support import WRITE_KEY, analytics, stored  # noqa: F401
from conftest import wait_until
from segment.analytics import Client

from vibe.analytics.keys import ANALYTICS


def basic(key=WRITE_KEY):
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.mark.parametrize("use_gzip, sync_mode", [(False, False), (True, False), (False, True)])
async def test_the_segment_python_client_sends_unchanged(analytics, use_gzip, sync_mode):
    errors = []
    host = str(analytics.client.make_url("")).rstrip("/")

    def send():
        client = Client(WRITE_KEY, host=host, sync_mode=sync_mode, gzip=use_gzip, max_retries=0,
                        on_error=lambda exc, batch: errors.append(exc))
        client.identify("learner-1", {"email": "l1@example.com", "plan": "pro"})
        client.track("learner-1", "Lesson Started", {"lesson": "intro"})
        client.page("learner-1", category="Docs", name="Pricing",
                    properties={"path": "/pricing", "url": "https://vibe.example/pricing"})
        client.track(anonymous_id="visitor-9", event="Clicked CTA",
                     timestamp=datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc))
        client.flush()
        if not sync_mode:  # the consumer thread batches the four messages into one /v1/batch
            client.shutdown()

    await asyncio.to_thread(send)
    assert errors == []
    rows = await stored(analytics)
    by_event = {r["event"]: r for r in rows}
    assert set(by_event) == {"identify", "Lesson Started", "page_view", "Clicked CTA"}
    assert json.loads(by_event["identify"]["properties"]) == {"email": "l1@example.com", "plan": "pro"}
    assert json.loads(by_event["Lesson Started"]["properties"]) == {"lesson": "intro"}
    page = json.loads(by_event["page_view"]["properties"])
    assert page["path"] == "/pricing" and page["name"] == "Pricing"
    assert by_event["Clicked CTA"]["anonymous_id"] == "visitor-9" and by_event["Clicked CTA"]["user_id"] is None
    assert by_event["Clicked CTA"]["ts"] == pytest.approx(1714564800.0, abs=5)  # skew-corrected by sentAt
    assert json.loads(by_event["Lesson Started"]["context"])["library"]["name"] == "analytics-python"
    assert all(len(r["message_id"]) >= 32 and r["source"] == "server" for r in rows)


async def test_write_key_in_body_dedupe_and_per_message_rejections(analytics):
    batch = {"writeKey": WRITE_KEY, "sentAt": "2024-05-01T12:00:00Z", "batch": [
        {"type": "track", "event": "A", "userId": "u1", "messageId": "seg-1", "timestamp": "2024-05-01T11:59:00Z"},
        {"type": "page", "userId": "u1", "messageId": "seg-2", "context": {"page": {"path": "/from-context"}}},
        {"type": "page", "userId": "u1", "messageId": "seg-3"},  # no path anywhere: dropped, still 200
        {"type": "launch", "userId": "u1"},
        {"type": "alias", "userId": "u1", "previousUserId": "anon-old", "messageId": "seg-4"},
    ]}
    resp = await analytics.client.post("/v1/batch", json=batch)
    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["success"] is True and (answer["accepted"], answer["duplicate"]) == (3, 0)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(2, "properties.path"), (3, "type")]
    again = await (await analytics.client.post("/v1/batch", json=batch)).json()
    assert (again["accepted"], again["duplicate"]) == (0, 3)
    rows = {r["message_id"]: r for r in await stored(analytics)}
    assert set(rows) == {"seg-1", "seg-2", "seg-4"}
    assert rows["seg-1"]["received_at"] - rows["seg-1"]["ts"] == pytest.approx(60, abs=1e-3)
    assert json.loads(rows["seg-2"]["properties"])["path"] == "/from-context"
    assert json.loads(rows["seg-4"]["properties"]) == {"previousUserId": "anon-old"}


async def test_browser_messages_relayed_with_a_bot_user_agent_are_flagged(analytics):
    batch = {"batch": [
        {"type": "page", "anonymousId": "a1", "messageId": "b-1", "properties": {"path": "/"},
         "context": {"userAgent": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"}},
        {"type": "page", "anonymousId": "a2", "messageId": "b-2", "properties": {"path": "/"},
         "context": {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/128.0"}}]}
    resp = await analytics.client.post("/v1/batch", json=batch, headers=basic())
    assert resp.status == 200
    assert {r["message_id"]: bool(r["is_bot"]) for r in await stored(analytics)} == {"b-1": True, "b-2": False}
    views = await analytics.db.fetchval("SELECT SUM(n) FROM analytics_page_views")
    assert int(views) == 1


async def test_single_message_routes_and_gzip(analytics):
    body = gzip.compress(json.dumps({"userId": "u2", "event": "Solo", "messageId": "solo-1"}).encode())
    resp = await analytics.client.post("/v1/track", data=body, headers={**basic(), "Content-Encoding": "gzip",
                                                                       "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    resp = await analytics.client.post("/v1/identify", json={"userId": "u2", "traits": {"name": "Ada"}}, headers=basic())
    assert resp.status == 200
    assert sorted(r["event"] for r in await stored(analytics)) == ["Solo", "identify"]


async def test_malformed_bodies_are_400_and_bad_keys_401(analytics):
    for data, code in ((b"{oops", "invalid_json"), (b"[]", "invalid_body"), (b'{"batch": {}}', "invalid_batch")):
        resp = await analytics.client.post("/v1/batch", data=data, headers=basic())
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code
    resp = await analytics.client.post("/v1/batch", json={"batch": []}, headers=basic("wrong"))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_write_key"
    resp = await analytics.client.post("/v1/batch", json={"batch": []})
    assert resp.status == 401
    resp = await analytics.client.post("/v1/batch", json={"batch": [], "sentAt": "never"}, headers=basic())
    assert resp.status == 400


async def test_back_pressure_answers_503_with_retry_after(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, ANALYTICS_MAX_QUEUE="2",
                                  ANALYTICS_COMMIT_CONCURRENCY="1")
    committer = service.app[ANALYTICS].committer

    def batch(*names):
        return {"batch": [{"type": "track", "event": n, "userId": "u", "messageId": n} for n in names]}

    async with service.db.transaction() as tx:  # the database is busy: writes wait for this
        if tx.dialect == "postgresql":
            await tx.execute("LOCK TABLE analytics_events IN EXCLUSIVE MODE")
        first = asyncio.create_task(service.client.post("/v1/batch", json=batch("a", "b"), headers=basic()))

        async def flushing():
            return committer.flushing == 1

        async def queued():
            return committer.pending == 2

        await wait_until(flushing)
        second = asyncio.create_task(service.client.post("/v1/batch", json=batch("c", "d"), headers=basic()))
        await wait_until(queued)
        resp = await service.client.post("/v1/batch", json=batch("e"), headers=basic())
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "analytics_overloaded"
    assert [(await task).status for task in (first, second)] == [200, 200]
    assert sorted(r["message_id"] for r in await stored(service)) == ["a", "b", "c", "d"]
