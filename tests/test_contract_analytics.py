"""CONTRACT.md, analytics-tracking: every route the platform calls, with the original function's
exact bodies, through HTTP (both databases): the POST routes answer `success: true` and keep every
field where vibe keeps it; the three GET reports answer in the original's shapes."""

import json
import re
import time
import uuid

import pytest
import tokens
from analytics_support import (  # noqa: F401
    BROWSER,
    PREFIX,
    WRITE_KEY,
    analytics,
    anon_key,
    at,
    browser,
    get,
    post,
    stored,
)
from conftest import make_event, wait_until
from stripe_support import CUSTOMER, fixture, link_user

from vibe.analytics.keys import ANALYTICS
from vibe.analytics.queries import refresh_business_views
from vibe.web.times import iso, to_seconds

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")
SERVICE = tokens.auth(tokens.service_token())
UM = "/functions/v1/user-management"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
        "Mobile/15E148 Safari/604.1")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
          "Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
           "Mobile Safari/537.36")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/126.0.0.0 Safari/537.36")
EDGE = CHROME + " Edg/126.0.0.0"


def user(user_id: str, agent: str = BROWSER) -> dict:
    return {**tokens.auth(tokens.user_token(user_id)), "User-Agent": agent}


async def signed_up(service, user_id: str) -> str:
    token = tokens.user_token(user_id, email=f"{user_id[:8]}@example.com")
    resp = await service.client.post(UM, json={"action": "create_profile", "data": {"locale": "de-DE"}},
                                     headers=tokens.auth(token))
    assert resp.status == 200, await resp.text()
    return user_id


def props(row: dict) -> dict:
    return json.loads(row["properties"])


def events_of(journey: dict) -> list[dict]:
    return [e for s in journey["sessions"] for e in s["events"]]


async def test_the_seed_guides_event_call_is_accepted_and_shows_in_the_journey(analytics):
    me = str(uuid.uuid4())
    body = {"event_type": "page_view", "user_id": me, "properties": {"page": "/dashboard"}}
    answer = await post(analytics, "event", body, user(me))
    assert answer["success"] is True and answer["accepted"] == 1
    [event] = events_of(await get(analytics, f"journey/{me}", tokens.user_token(me)))
    assert (event["event"], event["user_id"], event["properties"]) == ("page_view", me, {"page": "/dashboard"})
    assert ISO.fullmatch(event["timestamp"]) and ISO.fullmatch(event["received_at"])


async def test_event_keeps_every_original_field_where_vibe_keeps_it(analytics):
    body = {"event_type": "lesson_opened", "user_id": "learner-1", "session_id": "sess-1",
            "page_url": "https://vibe.example/lessons/1", "referrer": "https://www.google.com/",
            "user_agent": FIREFOX, "properties": {"lesson": "gebot-1"}, "timestamp": "2025-03-01T12:00:00Z"}
    assert (await post(analytics, "event", body, SERVICE))["success"] is True
    [row] = await stored(analytics, event="lesson_opened")
    assert (row["user_id"], row["session_id"], row["ts"], bool(row["is_bot"])) == ("learner-1", "sess-1",
                                                                                  1740830400.0, False)
    assert props(row) == {"lesson": "gebot-1"}
    assert json.loads(row["context"]) == {"page": {"url": "https://vibe.example/lessons/1",
                                                   "referrer": "https://www.google.com/"}, "user_agent": FIREFOX}
    # A relayed crawler's user agent marks the event a bot, as vibe's context.user_agent does.
    await post(analytics, "event", {**body, "event_type": "crawled", "user_agent": "Googlebot/2.1"}, SERVICE)
    assert (await stored(analytics, event="crawled"))[0]["is_bot"]


async def test_unknown_top_level_fields_are_kept_and_collisions_and_reserved_names_refused(analytics):
    body = {"event_type": "experiment_seen", "user_id": "u-1", "plan": "pro", "experiment": {"arm": "b"},
            "properties": {"page": "/pricing"}}
    await post(analytics, "event", body, SERVICE)
    [row] = await stored(analytics, event="experiment_seen")
    assert props(row) == {"page": "/pricing", "plan": "pro", "experiment": {"arm": "b"}}
    # The same name at the top level and in properties with the same value is one value.
    await post(analytics, "event", {**body, "event_type": "again", "properties": {"plan": "pro"}}, SERVICE)
    bad = [({**body, "properties": {"plan": "free"}}, "plan"),
           ({**body, "event": "other"}, "event_type"),
           ({**body, "context": {"page": {"url": "https://a.example/"}}, "page_url": "https://b.example/"}, "page_url"),
           ({**body, "is_bot": False}, "is_bot"), ({**body, "received_at": 0}, "received_at"),
           ({**body, "sender_scope": "server"}, "sender_scope"),
           ({**body, "page_url": 5}, "page_url"), ({**body, "referrer": "x\x00y"}, "referrer"),
           ({**body, "user_agent": "a" * 1025}, "user_agent"), ({**body, "event_type": "\ud800x"}, "event"),
           ({**body, "user_id": "has space"}, "user_id"), ({**body, "context": {"page": "home"}, "page_url": "/"},
                                                             "context.page")]
    for wrong, field in bad:
        answer = await post(analytics, "event", wrong, SERVICE, status=400)
        assert answer["error"]["details"]["field"] == field, (field, answer)
    # In a batch, a refused event is listed and the others are kept.
    batch = await post(analytics, "event", {"batch": [bad[0][0], {**body, "event_type": "kept"}]}, SERVICE)
    assert [r["status"] for r in batch["results"]] == ["rejected", "accepted"] and batch["success"] is True
    deep = {**body, "nested": json.loads("[" * 40 + "]" * 40)}
    assert (await post(analytics, "event", deep, SERVICE, status=400))["error"]["code"] == "too_deep"
    assert sorted(r["event"] for r in await stored(analytics)) == ["again", "experiment_seen", "kept"]


async def test_user_behavior_original_body(analytics):
    me = str(uuid.uuid4())
    body = {"user_id": me, "action": "clicked_cta", "resource_type": "commandment", "resource_id": "8",
            "duration_ms": 1200, "metadata": {"variant": "b"}}
    answer = await post(analytics, "user-behavior", body, user(me))
    assert answer["success"] is True and answer["accepted"] == 1
    [row] = await stored(analytics, user_id=me)
    assert row["event"] == "user_behavior"
    assert props(row) == {"action": "clicked_cta", "resource_type": "commandment", "resource_id": "8",
                          "duration_ms": 1200, "metadata": {"variant": "b"}}
    for wrong, field in (({**body, "duration_ms": -1}, "properties.duration_ms"),
                         ({**body, "metadata": "b"}, "properties.metadata"),
                         ({k: v for k, v in body.items() if k != "action"}, "properties.action")):
        answer = await post(analytics, "user-behavior", wrong, user(me), status=400)
        assert answer["error"]["details"]["field"] == field
    answer = await post(analytics, "user-behavior", {**body, "user_id": "someone-else"}, user(me), status=403)
    assert answer["error"]["code"] == "user_mismatch"  # a signed-in user sends only their own


async def test_business_metric_original_body(analytics):
    body = {"metric_type": "mrr", "value": 4900.5, "dimensions": {"plan": "pro"}, "timestamp": iso(at(9, 12))}
    answer = await post(analytics, "business-metric", body, SERVICE)
    assert answer["success"] is True
    [row] = await stored(analytics, event="business_metric")
    assert props(row) == {"name": "mrr", "value": 4900.5, "dimensions": {"plan": "pro"}}
    assert (row["user_id"], row["anonymous_id"], row["ts"]) == (None, "business", at(9, 12))
    report = await get(analytics, "business-metrics", timeRange="30d", metricType="mrr")
    assert report["data"] == [{"metric_type": "mrr", "value": 4900.5, "dimensions": {"count": 1},
                               "timestamp": iso(at(9))}]
    assert (await post(analytics, "business-metric", {**body, "value": "lots"}, SERVICE, status=400)
            )["error"]["details"]["field"] == "properties.value"
    assert (await post(analytics, "business-metric", body, user("u-1"), status=403))["error"]["code"] == \
        "sender_not_allowed"


@pytest.mark.parametrize("agent, device, name", [
    (IPHONE, "mobile", "safari"), (IPAD, "tablet", "safari"), (CHROME, "desktop", "chrome"),
    (FIREFOX, "desktop", "firefox"), (BROWSER, "desktop", "safari"), (ANDROID, "mobile", "chrome"),
    (ANDROID_TABLET, "tablet", "chrome"), (EDGE, "desktop", "edge"),
])
async def test_page_view_derives_device_and_browser_and_is_a_behaviour_of_a_known_user(analytics, agent, device,
                                                                                         name):
    me = str(uuid.uuid4())
    body = {"user_id": me, "session_id": "sess-7", "page_url": "https://vibe.example/pricing?plan=pro",
            "referrer": "https://www.google.com/", "viewport_width": 390, "viewport_height": 844,
            "properties": {"campaign": "spring"}}
    answer = await post(analytics, "page-view", body, user(me, agent))
    assert answer["success"] is True
    [row] = await stored(analytics, user_id=me)
    assert (row["event"], row["session_id"]) == ("page_view", "sess-7")
    assert props(row) == {"url": "https://vibe.example/pricing?plan=pro", "path": "/pricing",
                          "referrer": "https://www.google.com/", "viewport_width": 390, "viewport_height": 844,
                          "campaign": "spring", "device_type": device, "browser": name}
    insights = await get(analytics, "user-insights", tokens.user_token(me))
    assert insights["data"]["recent_activity"] == [{"action": "page_view", "resource_type": "page",
                                                   "resource_id": "https://vibe.example/pricing?plan=pro",
                                                   "timestamp": iso(row["ts"])}]


@pytest.mark.parametrize("url", ["https://4]", "https://[::1", "ftp://vibe.example/x", "/relative"])
async def test_a_page_url_that_is_no_absolute_http_url_is_400(analytics, url):
    body = {"session_id": "visitor-1", "properties": {"url": url}}
    answer = await post(analytics, "page-view", body, {**tokens.auth(anon_key()), "User-Agent": IPHONE}, status=400)
    assert "properties.url" in answer["message"]
    assert await stored(analytics) == []


async def test_page_view_paths_given_values_and_anonymous_callers(analytics):
    # A path is the page's path; a device the body names wins; the anon key with a session id.
    body = {"session_id": "visitor-1", "page_url": "/courses", "properties": {"device_type": "tablet"}}
    await post(analytics, "page-view", body, {**tokens.auth(anon_key()), "User-Agent": IPHONE})
    [row] = await stored(analytics)
    assert (row["anonymous_id"], row["source"]) == ("visitor-1", "anonymous")
    assert props(row) == {"path": "/courses", "device_type": "tablet", "browser": "safari"}
    pages = await get(analytics, "aggregates/pages", **{"from": time.time() - 86400})
    assert pages["rows"] == [{"path": "/courses", "views": 1}]
    for wrong, field in (({**body, "viewport_width": -1}, "properties.viewport_width"),
                         ({**body, "page_url": "courses"}, "properties.url"),
                         ({**body, "properties": {"device_type": "fridge"}}, "properties.device_type")):
        answer = await post(analytics, "page-view", wrong, {**tokens.auth(anon_key()), "User-Agent": IPHONE},
                            status=400)
        assert answer["error"]["details"]["field"] == field


async def test_workshop_completion_original_body(analytics):
    me = str(uuid.uuid4())
    body = {"user_id": me, "workshop_id": "prompting-101", "completion_time_ms": 1500000, "score": 92,
            "challenges_completed": 7}
    assert (await post(analytics, "workshop-completion", body, user(me)))["success"] is True
    [row] = await stored(analytics, user_id=me)
    assert row["event"] == "workshop_completed"
    assert props(row) == {"workshop_id": "prompting-101", "duration": 1500.0, "score": 92, "challenges_completed": 7}
    workshops = await get(analytics, "aggregates/workshops", **{"from": time.time() - 86400})
    assert workshops["rows"] == [{"workshop_id": "prompting-101", "completions": 1, "average_score": 92.0,
                                  "average_duration": 1500.0}]
    for wrong, field in (({**body, "score": 101}, "properties.score"),
                         ({**body, "challenges_completed": 1.5}, "properties.challenges_completed"),
                         ({**body, "completion_time_ms": "slow"}, "completion_time_ms"),
                         ({**body, "properties": {"duration": 3}}, "completion_time_ms")):
        answer = await post(analytics, "workshop-completion", wrong, user(me), status=400)
        assert answer["error"]["details"]["field"] == field


async def test_subscription_events_are_named_by_kind_and_a_purchase_is_revenue(analytics):
    buyer = await signed_up(analytics, str(uuid.uuid4()))
    moment = time.time() - 3600
    when, day = iso(moment), iso(moment - moment % 86400)
    purchase = {"user_id": buyer, "event_type": "purchased", "subscription_tier": "pro", "amount": 4900,
                "currency": "EUR", "timestamp": when}
    assert (await post(analytics, "subscription-event", purchase, SERVICE))["success"] is True
    for kind in ("cancelled", "upgraded", "trial_started"):
        await post(analytics, "subscription-event", {"user_id": buyer, "event_type": kind,
                                                     "subscription_tier": "pro", "timestamp": when}, SERVICE)
    rows = {r["event"]: props(r) for r in await stored(analytics, user_id=buyer)}
    assert rows["subscription_purchased"] == {"event_type": "purchased", "action": "payment", "tier": "pro",
                                              "amount": 4900, "currency": "eur"}
    assert [rows[f"subscription_{k}"]["action"] for k in ("cancelled", "upgraded", "trial_started")] == [
        "canceled", "upgraded", "updated"]
    revenue = await get(analytics, "aggregates/revenue", **{"from": time.time() - 86400})
    assert [(r["tier"], r["currency"], r["amount"], r["payments"]) for r in revenue["rows"]] == [
        ("pro", "eur", 4900, 1)]
    dashboard = (await get(analytics, "dashboard", timeRange="7d"))["data"]["revenue"]
    assert dashboard == {"total_revenue": 4900, "currency": "eur", "by_currency": [{"currency": "eur", "amount": 4900}],
                         "subscription_conversions": 1}
    metrics = (await get(analytics, "business-metrics", timeRange="30d"))["data"]
    assert {(m["metric_type"], m["value"], m["timestamp"]) for m in metrics} == {
        ("revenue", 4900, day), ("subscription_purchased", 1, day), ("subscription_cancelled", 1, day),
        ("subscription_upgraded", 1, day), ("subscription_trial_started", 1, day)}
    [paid] = [m for m in metrics if m["metric_type"] == "revenue"]
    assert paid["dimensions"] == {"subscription_tier": "pro", "currency": "eur", "payments": 1}
    for wrong, field in (({**purchase, "currency": None}, "properties.currency"),
                         ({**purchase, "subscription_tier": "gold"}, "properties.tier"),
                         ({**purchase, "event_type": "has space"}, "event_type"),
                         ({**purchase, "amount": 49.5}, "properties.amount")):
        answer = await post(analytics, "subscription-event", wrong, SERVICE, status=400)
        assert answer["error"]["details"]["field"] == field
    answer = await post(analytics, "subscription-event", purchase, user(buyer), status=403)
    assert answer["error"]["code"] == "sender_not_allowed"  # revenue comes from servers only


async def test_the_dashboard_in_the_original_shape(analytics):
    one = await signed_up(analytics, str(uuid.uuid4()))
    two = await signed_up(analytics, str(uuid.uuid4()))
    when = time.time() - 3600
    stamp = iso(when)
    for who, path in ((one, "/a"), (one, "/b"), (two, "/a")):
        await post(analytics, "page-view", {"user_id": who, "page_url": path, "timestamp": stamp}, user(who))
    await post(analytics, "page-view", {"session_id": "visitor", "page_url": "/a", "timestamp": stamp},
               {**tokens.auth(anon_key()), "User-Agent": BROWSER})
    await post(analytics, "workshop-completion", {"user_id": one, "workshop_id": "w-1", "timestamp": stamp}, user(one))
    await post(analytics, "event", {"event_type": "page_view", "user_id": two, "timestamp": iso(at(0, 12))}, user(two))
    answer = await get(analytics, "dashboard", timeRange="7d")
    data = answer["data"]
    assert data["overview"] == {"total_users": 2, "active_users": 2, "page_views": 4, "workshop_completions": 1}
    assert data["revenue"] == {"total_revenue": 0, "currency": None, "by_currency": [],
                               "subscription_conversions": 0}
    days, start = data["user_engagement"], to_seconds(answer["from"])
    assert [d["date"] for d in days] == [iso(d) for d in range(int(start - start % 86400),
                                                                int(to_seconds(answer["to"])), 86400)]
    busy = [d for d in days if d["events"]]
    assert busy == [{"date": iso(when - when % 86400), "active_users": 2, "events": 5, "page_views": 4,
                     "workshop_completions": 1}]
    assert ISO.fullmatch(answer["from"]) and ISO.fullmatch(answer["to"])
    # Thirty days reach the older page view; one user's dashboard is theirs alone; by the hour for 24h.
    month = (await get(analytics, "dashboard", timeRange="30d"))["data"]["overview"]
    assert (month["page_views"], month["active_users"]) == (5, 2)
    mine = (await get(analytics, "dashboard", timeRange="7d", userId=one))["data"]
    assert mine["overview"] == {"total_users": 1, "active_users": 1, "page_views": 2, "workshop_completions": 1}
    hourly = (await get(analytics, "dashboard", timeRange="24h"))["data"]["user_engagement"]
    assert len(hourly) in (24, 25) and [h for h in hourly if h["events"]] == [
        {"date": iso(when - when % 3600), "active_users": 2, "events": 5, "page_views": 4, "workshop_completions": 1}]


async def test_user_insights_in_the_original_shape(analytics):
    me = await signed_up(analytics, str(uuid.uuid4()))
    resp = await analytics.client.post(UM, headers=tokens.auth(tokens.user_token(me)), json={
        "action": "sync_progress", "data": {"items": [{"resource_type": "workshop", "resource_id": "1",
                                                       "status": "completed"}]}})
    assert resp.status == 200, await resp.text()
    start = time.time() - 4 * 3600
    steps = [("page-view", {"page_url": "/a"}, 0), ("page-view", {"page_url": "/b"}, 600),
             ("page-view", {"page_url": "/c"}, 7200), ("user-behavior", {"action": "clicked", "resource_type": "cta",
                                                                         "resource_id": "buy"}, 7260),
             ("workshop-completion", {"workshop_id": "prompting-101", "score": 80}, 7300)]
    for endpoint, body, offset in steps:
        await post(analytics, endpoint, {"user_id": me, "timestamp": start + offset, **body}, user(me))
    await post(analytics, "page-view", {"user_id": "someone-else", "page_url": "/a"}, SERVICE)
    data = (await get(analytics, "user-insights", tokens.user_token(me)))["data"]
    assert data["activity_summary"] == {"total_sessions": 2, "total_page_views": 3, "workshops_completed": 2,
                                        "achievements_earned": 1}
    assert data["recent_activity"][:3] == [
        {"action": "workshop_completed", "resource_type": "workshop", "resource_id": "prompting-101",
         "timestamp": iso(start + 7300)},
        {"action": "clicked", "resource_type": "cta", "resource_id": "buy", "timestamp": iso(start + 7260)},
        {"action": "page_view", "resource_type": "page", "resource_id": "/c", "timestamp": iso(start + 7200)}]
    profile = data["profile"]
    assert (profile["id"], profile["locale"], profile["tier"]) == (me, "de-DE", "free")
    assert ISO.fullmatch(profile["created_at"])
    assert (await get(analytics, "user-insights", userId=me))["data"] == data  # an admin sees the same


async def test_who_may_read_the_reports(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, SUPABASE_ANON_KEY="sb_publishable_contract_key")
    me, other = "learner-me", "learner-other"
    for path in ("dashboard", "business-metrics"):
        assert (await get(service, path, tokens.user_token(me), status=403))["error"]["code"] == "forbidden"
        await get(service, path, tokens.service_token())
        await get(service, path)
    await get(service, "user-insights", tokens.user_token(me), userId=me)
    await get(service, "user-insights", tokens.user_token(me))  # their own by default
    assert (await get(service, "user-insights", tokens.user_token(me), status=403, userId=other)
            )["error"]["code"] == "forbidden"
    assert (await get(service, "user-insights", userId=other))["data"]["profile"] is None
    await get(service, "user-insights", tokens.service_token(), userId=other)
    assert (await get(service, "user-insights", tokens.service_token(), status=400))["error"]["code"] == "invalid_query"
    for path in ("dashboard", "business-metrics", f"user-insights?userId={me}"):
        for headers in ({}, tokens.auth(anon_key()), tokens.auth("sb_publishable_contract_key")):
            resp = await service.client.get(f"{PREFIX}/{path}", headers=headers)
            assert resp.status == 401, (path, headers, await resp.text())


@pytest.mark.parametrize("value", ["7", "7w", "0d", "-1d", "1000d", "721h", "abc", "24H", "7d ", "1.5d"])
async def test_a_bad_time_range_is_400(analytics, value):
    for path in ("dashboard", "business-metrics"):
        answer = await get(analytics, path, status=400, timeRange=value)
        assert answer["error"]["code"] == "invalid_query" and "timeRange" in answer["error"]["message"]


async def test_anonymous_callers_with_the_anon_key(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, SUPABASE_ANON_KEY="sb_publishable_contract_key")
    keys = (anon_key(), "sb_publishable_contract_key")
    for key in keys:
        headers = {**tokens.auth(key), "apikey": key, "User-Agent": BROWSER}
        body = {"event_type": "landing_seen", "session_id": f"s-{key[-4:]}", "properties": {"page": "/"}}
        assert (await post(service, "event", body, headers))["success"] is True
        await post(service, "event", {**body, "anonymous_id": f"a-{key[-4:]}"}, headers)
        # Nobody signed in names no user (vibe's rule), and needs some id to be counted by.
        answer = await post(service, "event", {**body, "user_id": "u-1"}, headers, status=401)
        assert answer["error"]["code"] == "unauthorized"
        answer = await post(service, "event", {"event_type": "x"}, headers, status=400)
        assert answer["error"]["details"]["field"] == "anonymous_id"
    rows = await stored(service)
    assert [(r["anonymous_id"], r["session_id"], r["source"]) for r in rows] == [
        (f"s-{k[-4:]}", f"s-{k[-4:]}", "anonymous") if i % 2 == 0 else (f"a-{k[-4:]}", f"s-{k[-4:]}", "anonymous")
        for k in keys for i in range(2)]


@pytest.mark.parametrize("disabled", ["", "analytics_subscriptions"])
async def test_revenue_in_the_reports_is_net_of_refunds(start_service, disabled):
    # Without the plugin that keeps the revenue aggregate, the billing views' net revenue stands in.
    service = await start_service(VIBE_DISABLE_PLUGINS=disabled)
    await link_user(service)
    created = int(time.time()) - 3600
    charge = {"id": "ch_000000000000000000000000", "object": "charge", "amount": 2000, "amount_captured": 2000,
              "amount_refunded": 500, "currency": "usd", "customer": CUSTOMER, "paid": True, "captured": True,
              "payment_intent": "pi_000000000000000000000000", "status": "succeeded", "refunded": False}
    await service.deliver(fixture("invoice.payment_succeeded", created=created),
                          make_event("charge.refunded", charge, created=created + 5))
    await refresh_business_views(service.db)
    revenue = (await get(service, "dashboard", timeRange="7d"))["data"]["revenue"]
    assert (revenue["total_revenue"], revenue["currency"]) == (1500, "usd")
    metrics = (await get(service, "business-metrics", timeRange="7d"))["data"]
    assert sorted((m["metric_type"], m["value"]) for m in metrics if m["metric_type"] in ("revenue", "refunds")) == [
        ("refunds", 500), *([] if disabled else [("revenue", 2000)])]
    mine = (await get(service, "dashboard", timeRange="7d", userId="user-1"))["data"]["revenue"]
    assert (mine["total_revenue"], mine["currency"]) == (1500, "usd")


async def test_the_reports_are_cached_until_a_write_and_documented(analytics):
    generations = analytics.app[ANALYTICS].generations
    if analytics.db.dialect == "postgresql":  # the schedule refreshes the business views once at start-up

        async def refreshed_once():
            return generations["business"] >= 1

        await wait_until(refreshed_once)
    first = (await get(analytics, "dashboard", timeRange="7d"))["data"]["overview"]
    assert first["total_users"] == 0
    await analytics.db.execute("INSERT INTO profiles (id, email, created_at, updated_at) VALUES (%s, %s, 0, 0)",
                               ("behind-the-cache", "b@example.com"))
    assert (await get(analytics, "dashboard", timeRange="7d"))["data"]["overview"] == first  # from the cache
    await post(analytics, "event", {"event_type": "x", "user_id": "behind-the-cache"}, SERVICE)
    assert (await get(analytics, "dashboard", timeRange="7d"))["data"]["overview"]["total_users"] == 1
    doc = await (await analytics.client.get("/openapi.json")).json()
    for path, keys in (("dashboard", ["overview", "revenue", "user_engagement"]),
                       ("user-insights", ["profile", "activity_summary", "recent_activity"])):
        answer = doc["paths"][f"{PREFIX}/{path}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert list(answer["properties"]["data"]["properties"]) == keys
    metrics = doc["paths"][f"{PREFIX}/business-metrics"]["get"]["responses"]["200"]["content"]["application/json"]
    assert metrics["schema"]["properties"]["data"]["items"]["properties"]["timestamp"]["format"] == "date-time"
    track = doc["paths"][f"{PREFIX}/{{endpoint}}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    event = next(e for e in track["oneOf"][0]["anyOf"] if e["title"] == "event")
    assert {"event_type", "page_url", "referrer", "user_agent"} <= set(event["properties"])
    assert event["additionalProperties"] is True and "is_bot" in event["propertyNames"]["not"]["enum"]


async def test_every_time_in_an_analytics_answer_is_iso_8601(analytics):
    await post(analytics, "event", {"batch": [
        {"event": "visit", "user_id": "walker", "timestamp": at(9, 10), "message_id": "t-1"},
        {"event": "signup", "user_id": "walker", "timestamp": at(9, 10, 5), "message_id": "t-2"}]})
    span = {"from": iso(at(9)), "to": at(10)}
    metrics = await get(analytics, "metrics", name="visit", **span)
    assert metrics["series"] == [{"start": iso(at(9)), "count": 1, "users": 1}]
    funnel = await get(analytics, "funnel", steps="visit,signup", **span)
    assert (funnel["from"], funnel["to"]) == (iso(at(9)), iso(at(10)))
    for kind in ("pages", "revenue"):
        rollup = await get(analytics, f"aggregates/{kind}", **span)
        assert (rollup["from"], rollup["to"]) == (iso(at(9)), iso(at(10)))
    business = await get(analytics, "business", **span)
    assert (business["from"], business["to"]) == (iso(at(9)), iso(at(10)))
    [session] = (await get(analytics, "journey/walker"))["sessions"]
    assert (session["start"], session["end"]) == (iso(at(9, 10)), iso(at(9, 10, 5)))
    assert [e["timestamp"] for e in session["events"]] == [iso(at(9, 10)), iso(at(9, 10, 5))]
    resp = await analytics.client.get(f"{PREFIX}/users/walker/events", headers=tokens.auth(tokens.admin_token()))
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [line["timestamp"] for line in lines] == [iso(at(9, 10)), iso(at(9, 10, 5))]
    assert all(ISO.fullmatch(line["received_at"]) for line in lines)
