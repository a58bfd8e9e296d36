"""Aggregates and the read API, against answers computed by hand."""

import datetime

import pytest
import tokens
from analytics_support import analytics, at, browser, get, iso_at, post  # noqa: F401


def ev(name, who, ts, mid, **extra):
    key = "anonymous_id" if who.startswith("anon") else "user_id"
    return {"event": name, key: who, "timestamp": ts, "message_id": mid, **extra}


async def seed_lessons(service):
    events = [
        ev("Lesson", "u1", at(0, 10, 5), "l1"),
        ev("Lesson", "u1", at(0, 10, 40), "l2"),
        ev("Lesson", "u2", at(0, 11, 10), "l3"),
        ev("Other", "u3", at(0, 10, 20), "o1"),
        ev("Lesson", "u1", at(1, 9, 0), "l4"),
        ev("Lesson", "anon-1", at(1, 9, 30), "l5"),
        ev("Lesson", "u9", at(0, 10, 30), "bot", context={"user_agent": "Googlebot/2.1"}),
    ]
    await post(service, "event", {"batch": events})


async def test_metrics_per_hour_and_day_with_distinct_users(analytics):
    await seed_lessons(analytics)
    hourly = await get(analytics, "metrics", name="Lesson", interval="hour", **{"from": at(0, 10), "to": at(0, 13)})
    assert hourly == {"name": "Lesson", "interval": "hour", "series": [
        {"start": iso_at(0, 10), "count": 2, "users": 1},
        {"start": iso_at(0, 11), "count": 1, "users": 1},
        {"start": iso_at(0, 12), "count": 0, "users": 0},
    ]}
    daily = await get(analytics, "metrics", name="Lesson", interval="day", **{"from": at(0), "to": at(2)})
    assert daily["series"] == [{"start": iso_at(0), "count": 3, "users": 2}, {"start": iso_at(1), "count": 2, "users": 2}]
    everything = await get(analytics, "metrics", **{"from": at(0), "to": at(1)})
    assert everything["name"] == "*" and everything["series"] == [{"start": iso_at(0), "count": 4, "users": 3}]
    # ISO 8601 works as well as Unix seconds.
    iso_from = datetime.datetime.fromtimestamp(at(0), datetime.timezone.utc).isoformat()
    iso = await get(analytics, "metrics", name="Lesson", **{"from": iso_from, "to": at(1) + 3600})
    assert [p["count"] for p in iso["series"]] == [3, 2]


async def test_a_read_right_after_an_acknowledged_write_sees_it(analytics):
    query = {"name": "Fresh", "interval": "day", "from": at(0), "to": at(1)}
    assert (await get(analytics, "metrics", **query))["series"][0]["count"] == 0
    for i in range(3):
        await post(analytics, "event", ev("Fresh", f"u{i}", at(0, 1), f"f{i}"))
        assert (await get(analytics, "metrics", **query))["series"][0] == {"start": iso_at(0), "count": i + 1,
                                                                           "users": i + 1}


async def test_metrics_queries_are_checked_and_admin_only(analytics):
    span = {"from": at(0), "to": at(1)}
    for query in ({"interval": "week", **span}, {"from": at(1), "to": at(0)}, {"from": "soon"},
                  {"name": "x" * 101, **span}, {"interval": "hour", "from": 0, "to": at(0)}):
        assert (await get(analytics, "metrics", status=400, **query))["error"]["code"] == "invalid_query"
    assert (await get(analytics, "metrics", tokens.user_token(), status=403))["error"]["code"] == "forbidden"
    resp = await analytics.client.get("/functions/v1/analytics-tracking/metrics")
    assert resp.status == 401
    await get(analytics, "metrics", tokens.service_token(), **span)


async def test_page_view_workshop_and_metric_rollups(analytics):
    views = [{"anonymous_id": "a1", "properties": {"path": "/pricing"}, "timestamp": at(0, 1)},
             {"anonymous_id": "a2", "properties": {"url": "https://x.example/pricing?utm=1"}, "timestamp": at(0, 2)},
             {"anonymous_id": "a1", "properties": {"path": "/"}, "timestamp": at(1, 2)},
             {"anonymous_id": "a3", "properties": {"path": "/"}, "timestamp": at(3, 2)}]
    await post(analytics, "page-view", {"batch": views})
    completions = [{"user_id": "u1", "properties": {"workshop_id": "w1", "score": 80, "duration": 600}, "timestamp": at(0)},
                   {"user_id": "u2", "properties": {"workshop_id": "w1", "score": 90}, "timestamp": at(1)},
                   {"user_id": "u3", "properties": {"workshop_id": "w2"}, "timestamp": at(1)}]
    await post(analytics, "workshop-completion", {"batch": completions})
    await post(analytics, "business-metric", {"batch": [
        {"user_id": "ops", "properties": {"name": "ad_spend", "value": 10.5}, "timestamp": at(0)},
        {"user_id": "ops", "properties": {"name": "ad_spend", "value": 4.5}, "timestamp": at(1)}]})
    span = {"from": at(0), "to": at(2)}
    pages = await get(analytics, "aggregates/pages", **span)
    assert pages["rows"] == [{"path": "/", "views": 1}, {"path": "/pricing", "views": 2}]
    workshops = await get(analytics, "aggregates/workshops", **span)
    assert workshops["rows"] == [
        {"workshop_id": "w1", "completions": 2, "average_score": 85.0, "average_duration": 600.0},
        {"workshop_id": "w2", "completions": 1, "average_score": None, "average_duration": None},
    ]
    metrics = await get(analytics, "aggregates/business-metrics", **span)
    assert metrics["rows"] == [{"name": "ad_spend", "count": 2, "total": 15.0}]
    assert (await get(analytics, "aggregates/nothing", status=404))["error"]["code"] == "not_found"


async def test_journey_splits_sessions_on_a_30_minute_gap(analytics):
    me = tokens.user_token("walker")
    events = [ev("Open", "walker", at(0, 9, 0), "j1"), ev("Read", "walker", at(0, 9, 20), "j2"),
              ev("Read", "walker", at(0, 9, 49), "j3"),  # 29 minutes later: same session
              ev("Open", "walker", at(0, 10, 30), "j4"),  # 41 minutes later: a new session
              ev("Open", "someone-else", at(0, 9, 5), "j5")]
    await post(analytics, "event", {"batch": events})
    journey = await get(analytics, "journey/walker", me)
    assert journey["user_id"] == "walker" and not journey["truncated"]
    assert [(s["start"], s["end"], [e["message_id"] for e in s["events"]]) for s in journey["sessions"]] == [
        (iso_at(0, 9, 0), iso_at(0, 9, 49), ["j1", "j2", "j3"]), (iso_at(0, 10, 30), iso_at(0, 10, 30), ["j4"])]
    assert journey["sessions"][0]["events"][1]["event"] == "Read"
    assert (await get(analytics, "journey/walker", tokens.user_token("snoop"), status=403))["error"]["code"] == "forbidden"
    admin_view = await get(analytics, "journey/walker", limit=2)
    assert admin_view["truncated"] and [e["message_id"] for s in admin_view["sessions"] for e in s["events"]] == ["j3", "j4"]
    assert (await get(analytics, "journey/walker", limit=0, status=400))["error"]["code"] == "invalid_query"


async def test_journey_includes_the_anonymous_events_before_sign_up(analytics):
    await post(analytics, "page-view", {"anonymous_id": "visitor-7", "properties": {"path": "/"}, "timestamp": at(0, 8)},
               browser())
    await post(analytics, "event", {"event": "Signed Up", "anonymous_id": "visitor-7", "timestamp": at(0, 8, 5)},
               browser(tokens.user_token("new-user")))
    journey = await get(analytics, "journey/new-user")
    assert [e["event"] for s in journey["sessions"] for e in s["events"]] == ["page_view", "Signed Up"]


async def test_funnel_counts_users_who_did_the_steps_in_order(analytics):
    steps = [("u1", ["visit", "signup", "pay"]), ("u2", ["visit", "signup"]), ("u3", ["signup", "visit", "pay"]),
             ("u4", ["visit", "pay", "signup"]), ("u5", ["pay"]), ("anon-6", ["visit", "visit", "signup", "pay"])]
    batch = [ev(name, who, at(0, 10, i), f"{who}-{i}") for who, names in steps for i, name in enumerate(names)]
    batch.append(ev("visit", "u7", at(0, 11), "u7-bot", context={"user_agent": "HeadlessChrome"}))
    await post(analytics, "event", {"batch": batch})
    answer = await get(analytics, "funnel", steps="visit,signup,pay", **{"from": at(0), "to": at(1)})
    assert answer["steps"] == [{"step": "visit", "users": 5}, {"step": "signup", "users": 4},
                               {"step": "pay", "users": 2}]
    outside = await get(analytics, "funnel", steps="visit,signup", **{"from": at(1), "to": at(2)})
    assert outside["steps"] == [{"step": "visit", "users": 0}, {"step": "signup", "users": 0}]
    for bad in ("visit", ",".join(["s"] * 11), "visit,,pay", "visit,*"):
        assert (await get(analytics, "funnel", steps=bad, status=400))["error"]["code"] == "invalid_query"


@pytest.mark.parametrize("action", ["export", "forget"])
async def test_only_the_user_or_an_admin_may_export_and_only_admins_forget(analytics, action):
    path = "/functions/v1/analytics-tracking/users/victim"
    if action == "export":
        resp = await analytics.client.get(path + "/events", headers=tokens.auth(tokens.user_token("other")))
    else:
        resp = await analytics.client.delete(path, headers=tokens.auth(tokens.user_token("victim")))
    assert resp.status == 403
