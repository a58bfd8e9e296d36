"""Ingestion through HTTP: schemas, batches, dedupe, who may send, skew, bots, limits."""

import asyncio
import gzip
import json
import time

import aiohttp
import pytest
import tokens
from analytics_support import (  # noqa: F401
    BROWSER,
    PREFIX,
    SERVER,
    WRITE_KEY,
    analytics,
    browser,
    post,
    stored,
)

from vibe.analytics.keys import ANALYTICS


@pytest.mark.parametrize("endpoint, properties, extra", [
    ("event", {"plan": "pro", "nested": {"a": [1, 2]}}, {"event": "Signed Up"}),
    ("event", {}, {"event": "Añadido al carrito: 'Pro' (anual)!"}),
    ("user-behavior", {"action": "click", "category": "nav", "label": "pricing", "value": 3}, {}),
    ("page-view", {"path": "/pricing", "title": "Pricing"}, {}),
    ("page-view", {"url": "https://vibe.example/courses/intro?ref=x#top"}, {}),
    ("workshop-completion", {"workshop_id": "ws-1", "score": 87.5, "duration": 1200}, {}),
    ("workshop-completion", {"workshop_id": "ws-2"}, {}),
    ("business-metric", {"name": "signups_from_ads", "value": 12.5, "unit": "count"}, {}),
    ("subscription-event", {"action": "payment", "tier": "pro", "amount": 2900, "currency": "USD"}, {}),
])
async def test_each_endpoint_accepts_a_good_event(analytics, endpoint, properties, extra):
    body = {"user_id": "user-1", "properties": properties, "message_id": f"m-{endpoint}-{len(properties)}", **extra}
    answer = await post(analytics, endpoint, body)
    assert answer["accepted"] == 1 and answer["results"][0]["status"] == "accepted"
    [row] = await stored(analytics, message_id=body["message_id"])
    assert row["endpoint"] == endpoint and row["user_id"] == "user-1" and row["source"] == "server"
    if endpoint == "page-view" and "url" in properties:
        assert json.loads(row["properties"])["path"] == "/courses/intro"
    if endpoint == "subscription-event":
        assert json.loads(row["properties"])["currency"] == "usd"


@pytest.mark.parametrize("endpoint, properties, extra, field", [
    ("event", {}, {}, "event"),
    ("event", {}, {"event": ""}, "event"),
    ("event", {}, {"event": "x" * 101}, "event"),
    ("event", {}, {"event": 5}, "event"),
    ("event", {}, {"event": "*"}, "event"),
    ("event", {}, {"event": " padded"}, "event"),
    ("event", {}, {"event": "line\nbreak"}, "event"),
    ("user-behavior", {"category": "nav"}, {}, "properties.action"),
    ("user-behavior", {"action": "click", "value": "high"}, {}, "properties.value"),
    ("user-behavior", {"action": "click"}, {"event": "other"}, "event"),
    ("page-view", {"title": "no path"}, {}, "properties.path"),
    ("page-view", {"path": "pricing"}, {}, "properties.path"),
    ("page-view", {"url": "javascript:alert(1)"}, {}, "properties.url"),
    ("page-view", {"path": 42}, {}, "properties.path"),
    ("workshop-completion", {"score": 50}, {}, "properties.workshop_id"),
    ("workshop-completion", {"workshop_id": "w", "score": 101}, {}, "properties.score"),
    ("workshop-completion", {"workshop_id": "w", "duration": -1}, {}, "properties.duration"),
    ("workshop-completion", {"workshop_id": "w", "score": True}, {}, "properties.score"),
    ("page-view", {"path": "/\udfffpricing"}, {}, "properties.path"),
    ("workshop-completion", {"workshop_id": "w\x00"}, {}, "properties.workshop_id"),
    ("business-metric", {"value": 3}, {}, "properties.name"),
    ("business-metric", {"name": "mrr"}, {}, "properties.value"),
    ("business-metric", {"name": "mrr", "value": "3"}, {}, "properties.value"),
    ("subscription-event", {"tier": "pro", "amount": 1, "currency": "usd"}, {}, "properties.action"),
    ("subscription-event", {"action": "payment", "tier": "gold", "amount": 1, "currency": "usd"}, {},
     "properties.tier"),
    ("subscription-event", {"action": "payment", "tier": "pro", "amount": 1.5, "currency": "usd"}, {},
     "properties.amount"),
    ("subscription-event", {"action": "payment", "tier": "pro", "amount": 100, "currency": "dollars"}, {},
     "properties.currency"),
])
async def test_each_endpoint_refuses_bad_fields(analytics, endpoint, properties, extra, field):
    body = {"user_id": "user-1", "properties": properties, **extra}
    answer = await post(analytics, endpoint, body, status=400)
    assert answer["error"]["code"] == "invalid_event"
    assert answer["error"]["details"]["field"] == field
    assert answer["error"]["request_id"]
    assert await stored(analytics) == []


@pytest.mark.parametrize("body, field", [
    ({"event": "x", "user_id": "u", "is_bot": False}, "is_bot"),  # vibe records it; other names are kept
    ({"event": "x", "user_id": "u", "colour": "red", "properties": {"colour": "blue"}}, "colour"),
    ({"event": "x"}, "user_id"),
    ({"event": "x", "user_id": "has space"}, "user_id"),
    ({"event": "x", "user_id": "u", "message_id": ""}, "message_id"),
    ({"event": "x", "user_id": "u", "timestamp": "yesterday"}, "timestamp"),
    ({"event": "x", "user_id": "u", "timestamp": True}, "timestamp"),
    ({"event": "x", "user_id": "u", "sent_at": "2024-13-01T00:00:00Z"}, "sent_at"),
    ({"event": "x", "user_id": "u", "properties": [1]}, "properties"),
    ({"event": "x", "user_id": "u", "context": "ctx"}, "context"),
    ({"event": "x", "user_id": "u", "properties": {"blob": "x" * 33000}}, "event"),
    ({"event": "x", "user_id": "u", "context": {"user_agent": 5}}, "context.user_agent"),
    ({"event": "\ud800signup", "user_id": "u"}, "event"),  # a lone surrogate: no text column holds it
])
async def test_the_envelope_is_validated(analytics, body, field):
    answer = await post(analytics, "event", body, status=400)
    assert answer["error"]["details"]["field"] == field


async def test_bad_bodies_and_unknown_endpoints(analytics):
    for raw, code in ((b"{not json", "invalid_json"), (b"[1, 2]", "invalid_body"),
                      (json.dumps({"batch": []}).encode(), "invalid_batch"),
                      (json.dumps({"batch": [{}] * 101}).encode(), "invalid_batch"),
                      (json.dumps({"batch": [], "extra": 1}).encode(), "invalid_body")):
        resp = await analytics.client.post(f"{PREFIX}/event", data=raw, headers=SERVER)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code
    answer = await post(analytics, "no-such-thing", {"event": "x", "user_id": "u"}, status=404)
    assert answer["error"]["code"] == "unknown_endpoint"
    big = json.dumps({"batch": [{"event": "x", "user_id": "u", "properties": {"p": "y" * 30000}}] * 20}).encode()
    resp = await analytics.client.post(f"{PREFIX}/event", data=big, headers=SERVER)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"


async def test_a_batch_with_invalid_events_keeps_the_valid_ones(analytics):
    batch = [
        {"event": "Opened", "user_id": "u1", "message_id": "b-1"},
        {"user_id": "u1", "message_id": "b-2"},
        {"event": "Closed", "anonymous_id": "anon-1", "message_id": "b-3"},
        "not an object",
        {"event": "Opened", "user_id": "u2", "message_id": "b-1"},  # same message id: counted once
    ]
    answer = await post(analytics, "event", {"batch": batch})
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted", "rejected", "duplicate"]
    assert answer["results"][1]["field"] == "event" and answer["results"][3]["field"] == "event"
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (2, 1, 2)
    assert sorted(r["message_id"] for r in await stored(analytics)) == ["b-1", "b-3"]
    everything_bad = await post(analytics, "event", {"batch": [{"user_id": "u"}, {"event": "x"}]}, status=400)
    assert everything_bad["error"]["code"] == "invalid_events"
    assert [r["field"] for r in everything_bad["error"]["details"]] == ["event", "user_id"]


async def test_a_retried_batch_is_counted_once(analytics):
    batch = {"batch": [{"event": "Lesson Viewed", "user_id": f"u{i}", "message_id": f"retry-{i}"} for i in range(5)]}
    first = await post(analytics, "event", batch)
    again = await post(analytics, "event", batch)
    assert first["accepted"] == 5 and again["accepted"] == 0 and again["duplicate"] == 5
    assert len(await stored(analytics, event="Lesson Viewed")) == 5
    count = await analytics.db.fetchval(
        "SELECT SUM(n) FROM analytics_counts WHERE granularity = 'day' AND event = 'Lesson Viewed'")
    assert int(count) == 5


async def test_who_may_send(analytics):
    me = tokens.user_token("user-me")
    # A signed-in user: the user id comes from the token.
    await post(analytics, "event", {"event": "x", "message_id": "w-1"}, browser(me))
    [row] = await stored(analytics, message_id="w-1")
    assert row["user_id"] == "user-me" and row["source"] == "user"
    await post(analytics, "event", {"event": "x", "user_id": "user-me", "message_id": "w-2"}, browser(me))
    answer = await post(analytics, "event", {"batch": [{"event": "x"}, {"event": "x", "user_id": "someone-else"}]},
                        browser(me), status=403)
    assert answer["error"]["code"] == "user_mismatch"
    # Anonymous browsers need an anonymous id and may not name a user.
    await post(analytics, "event", {"event": "x", "anonymous_id": "a-1", "message_id": "w-3"}, browser())
    answer = await post(analytics, "event", {"event": "x"}, browser(), status=400)
    assert answer["error"]["details"]["field"] == "anonymous_id"
    answer = await post(analytics, "event", {"event": "x", "user_id": "u", "anonymous_id": "a"}, browser(), status=401)
    assert answer["error"]["code"] == "unauthorized"
    # The write key and the service token may send about anyone; a wrong key is refused.
    answer = await post(analytics, "event", {"event": "x", "user_id": "u"}, {"X-Write-Key": "wrong"}, status=401)
    assert answer["error"]["code"] == "invalid_write_key"
    await post(analytics, "event", {"event": "x", "user_id": "any", "message_id": "w-4"},
               tokens.auth(tokens.service_token()))
    assert (await stored(analytics, message_id="w-4"))[0]["source"] == "server"
    # Server-only endpoints.
    body = {"properties": {"name": "m", "value": 1}}
    answer = await post(analytics, "business-metric", body, browser(me), status=403)
    assert answer["error"]["code"] == "sender_not_allowed"
    await post(analytics, "business-metric", body, browser(), status=403)
    # A bad token is 401 even on an endpoint anonymous browsers may use.
    resp = await analytics.client.post(f"{PREFIX}/event", json={"event": "x", "anonymous_id": "a"},
                                       headers={"Authorization": "Bearer not-a-jwt", "User-Agent": BROWSER})
    assert resp.status == 401


async def test_without_a_configured_write_key_no_key_is_accepted(start_service):
    service = await start_service()
    answer = await post(service, "event", {"event": "x", "user_id": "u"}, {"X-Write-Key": ""}, status=401)
    assert answer["error"]["code"] == "invalid_write_key"


async def test_clock_skew_is_corrected_and_future_times_clamped(analytics):
    now = time.time()
    # The client's clock runs 1 hour fast: it says the event happened 10 s before it sent it.
    skewed = {"event": "x", "user_id": "u", "message_id": "s-1",
              "timestamp": now + 3600 - 10, "sent_at": now + 3600}
    future = {"event": "x", "user_id": "u", "message_id": "s-2", "timestamp": now + 86400}
    iso = {"event": "x", "user_id": "u", "message_id": "s-3", "timestamp": "2024-03-01T12:00:00Z"}
    batch_level = {"batch": [{"event": "x", "user_id": "u", "message_id": "s-4", "timestamp": "2024-03-01T12:00:00+00:00"}],
                   "sent_at": "2024-03-01T12:00:30+00:00"}
    for body in (skewed, future, iso):
        await post(analytics, "event", body)
    await post(analytics, "event", batch_level)
    rows = {r["message_id"]: r for r in await stored(analytics)}
    after = time.time()
    assert rows["s-1"]["sent_at"] == pytest.approx(now + 3600)
    assert rows["s-1"]["received_at"] - 10 == pytest.approx(rows["s-1"]["ts"], abs=1e-3)
    assert rows["s-1"]["ts"] <= after
    assert rows["s-2"]["ts"] == pytest.approx(rows["s-2"]["received_at"])
    assert rows["s-3"]["ts"] == 1709294400.0 and rows["s-3"]["sent_at"] is None
    assert rows["s-4"]["received_at"] - rows["s-4"]["ts"] == pytest.approx(30, abs=1e-3)


@pytest.mark.parametrize("agent, bot", [
    (BROWSER, False),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36", True),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
    ("facebookexternalhit/1.1", True),
    ("curl/8.4.0", True),
    ("", True),
])
async def test_bots_are_stored_flagged_and_left_out_of_aggregates(analytics, agent, bot):
    await post(analytics, "page-view", {"anonymous_id": "a-1", "properties": {"path": "/"}, "message_id": "p-1"},
               {"User-Agent": agent})
    # A server relaying the browser's user agent: context.user_agent decides.
    await post(analytics, "page-view", {"anonymous_id": "a-2", "properties": {"path": "/"}, "message_id": "p-2",
                                        "context": {"user_agent": agent}})
    rows = await stored(analytics)
    assert [bool(r["is_bot"]) for r in rows] == [bot, bot]
    views = await analytics.db.fetchval("SELECT COALESCE(SUM(n), 0) FROM analytics_page_views")
    counted = await analytics.db.fetchval("SELECT COALESCE(SUM(n), 0) FROM analytics_counts WHERE event = '*'")
    assert int(views) == (0 if bot else 2) and int(counted) == (0 if bot else 4)  # hour and day rows


async def test_a_server_event_without_user_agent_is_not_a_bot(analytics):
    await post(analytics, "event", {"event": "x", "user_id": "u", "message_id": "n-1"})
    assert not (await stored(analytics))[0]["is_bot"]


async def test_gzip_bodies_are_accepted(analytics):
    body = gzip.compress(json.dumps({"event": "Zipped", "user_id": "u", "message_id": "z-1"}).encode())
    resp = await analytics.client.post(f"{PREFIX}/event", data=body,
                                       headers={**SERVER, "Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    try:  # aiohttp inflates as it reads; on a corrupt stream it may also drop the connection
        resp = await analytics.client.post(f"{PREFIX}/event", data=b"not gzip",
                                           headers={**SERVER, "Content-Encoding": "gzip"})
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_encoding"
    except aiohttp.ServerDisconnectedError:
        pass
    assert [r["message_id"] for r in await stored(analytics)] == ["z-1"]
    bomb = gzip.compress(b'{"event": "x", "user_id": "u", "p": "' + b"a" * 600_000 + b'"}')
    resp = await analytics.client.post(f"{PREFIX}/event", data=bomb, headers={**SERVER, "Content-Encoding": "gzip"})
    assert resp.status == 413


async def test_concurrent_requests_are_group_committed(analytics):
    bodies = [{"event": "Burst", "user_id": f"u{i}", "message_id": f"burst-{i}"} for i in range(60)]
    answers = await asyncio.gather(*(post(analytics, "event", b) for b in bodies))
    assert all(a["accepted"] == 1 for a in answers)
    assert len(await stored(analytics, event="Burst")) == 60
    committer = analytics.app[ANALYTICS].committer
    assert committer.items == 60 and committer.batches < 60


async def test_a_transaction_holds_at_most_the_configured_events_and_never_splits_a_request(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, ANALYTICS_BATCH_EVENTS="3",
                                  ANALYTICS_BATCH_WAIT_MS="20")
    pairs = [{"batch": [{"event": "Pair", "user_id": "u", "message_id": f"pair-{i}-{k}"} for k in range(2)]}
             for i in range(5)]
    answers = await asyncio.gather(*(post(service, "event", body) for body in pairs))
    assert [a["accepted"] for a in answers] == [2] * 5
    committer = service.app[ANALYTICS].committer
    assert (committer.items, committer.batches) == (5, 5)  # 2 + 2 > 3: one request per transaction
    singles = [{"event": "One", "user_id": "u", "message_id": f"one-{i}"} for i in range(6)]
    await asyncio.gather(*(post(service, "event", body) for body in singles))
    assert committer.items == 11 and 5 + 2 <= committer.batches < 11  # up to 3 single events together


async def test_servers_with_the_write_key_are_not_rate_limited_but_browsers_are(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, RATE_LIMIT_ANONYMOUS="3")
    for i in range(6):
        await post(service, "event", {"event": "x", "user_id": "u", "message_id": f"srv-{i}"})
    statuses = []
    for i in range(4):
        resp = await service.client.post(f"{PREFIX}/event", json={"event": "x", "anonymous_id": "a"},
                                         headers=browser())
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    resp = await service.client.post(f"{PREFIX}/event", json={"event": "x", "user_id": "u"},
                                     headers={"X-Write-Key": "guess"})
    assert resp.status == 429  # a wrong key counts against its IP like any anonymous caller
