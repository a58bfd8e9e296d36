"""Issue 15: JSON bodies nested past MAX_DEPTH are a 400 `too_deep` where they come in (the
analytics doors and the user-management route), and an event stored deep before that limit
existed does not make a journey or an export fail."""

import json
import time
import uuid

import pytest
import tokens
from analytics_support import (  # noqa: F401
    PREFIX,
    SERVER,
    WRITE_KEY,
    analytics,
    at,
    browser,
    get,
    post,
    stored,
)

from vibe.web.errors import ApiError
from vibe.web.json_body import MAX_DEPTH, check_depth, load_json, nesting_depth

USERS = "/functions/v1/user-management"


def nested(depth: int, leaf=1):
    """An object `depth` deep ({"a": {"a": ... leaf}}), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_text(depth: int) -> str:
    """The JSON text of `nested(depth)`, built as text (json.dumps would recurse)."""
    return '{"a":' * depth + "1" + "}" * depth


def test_nesting_is_measured_without_recursion():
    assert nesting_depth(5) == 0 and nesting_depth({}) == 1 and nesting_depth([[], {"a": [1]}]) == 3
    assert nesting_depth(nested(MAX_DEPTH)) == MAX_DEPTH
    very_deep: list = []
    for _ in range(200_000):  # far past the interpreter's recursion limit
        very_deep = [very_deep]
    assert nesting_depth(very_deep) == MAX_DEPTH + 1  # stops counting past the limit
    assert check_depth(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(ApiError) as refused:
        check_depth(nested(MAX_DEPTH + 1), "The thing")
    assert (refused.value.status, refused.value.code, refused.value.details) == (400, "too_deep", {"max_depth": 32})
    assert "The thing" in refused.value.message
    for raw, code in ((b"[" * 100_000 + b"]" * 100_000, "too_deep"), (b"{nope", "invalid_json"),
                      (b"\xff\xfe{}", "invalid_json"), (deep_text(MAX_DEPTH + 1), "too_deep")):
        with pytest.raises(ApiError) as refused:
            load_json(raw)
        assert refused.value.code == code, raw[:20]
    assert load_json(deep_text(MAX_DEPTH)) == nested(MAX_DEPTH)


async def raw_post(service, path: str, body: bytes | str, headers: dict) -> tuple[int, dict]:
    resp = await service.client.post(path, data=body, headers={"Content-Type": "application/json", **headers})
    return resp.status, await resp.json()


async def test_analytics_events_nested_past_the_limit_are_400_and_the_journey_stays_readable(analytics):
    me = tokens.user_token("deep-user")
    # The body itself is level 1 and `properties` level 2: properties may nest 30 more.
    ok = {"event": "Fine", "message_id": "fine", "timestamp": at(0, 9), "properties": {"x": nested(30)}}
    assert (await post(analytics, "event", ok, browser(me)))["accepted"] == 1
    cases = [
        (f"{PREFIX}/event", {"event": "Deep", "message_id": "deep-500", "properties": {"x": nested(500)}}, browser(me)),
        (f"{PREFIX}/event", {"event": "Deep", "message_id": "deep-31", "properties": {"x": nested(31)}}, browser(me)),
        (f"{PREFIX}/event", {"batch": [{"event": "Deep", "message_id": "deep-b", "context": nested(40)}]}, SERVER),
        (f"{PREFIX}/page-view", {"anonymous_id": "a-deep", "message_id": "deep-p",
                                 "properties": {"path": "/", "extra": nested(100)}}, browser()),
        ("/v1/batch", {"writeKey": WRITE_KEY, "batch": [{"type": "track", "event": "Deep", "userId": "deep-user",
                                                         "messageId": "deep-s", "properties": nested(60)}]}, {}),
        ("/v1/track", {"writeKey": WRITE_KEY, "event": "Deep", "userId": "deep-user", "messageId": "deep-t",
                       "context": nested(33)}, {}),
    ]
    for path, body, headers in cases:
        status, answer = await raw_post(analytics, path, json.dumps(body), headers)
        assert (status, answer["error"]["code"]) == (400, "too_deep"), (path, answer)
        assert answer["error"]["details"] == {"max_depth": MAX_DEPTH}
    # Past the parser's own stack: still a 400 too_deep, not invalid_json or a 500.
    thousands = '{"event": "Deep", "properties": {"a": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    status, answer = await raw_post(analytics, f"{PREFIX}/event", thousands, browser(me))
    assert (status, answer["error"]["code"]) == (400, "too_deep")
    assert [r["message_id"] for r in await stored(analytics)] == ["fine"]
    for token in (me, None):  # the user's own journey, then an admin's: cached, then served from the cache
        for _ in range(2):
            journey = await get(analytics, "journey/deep-user", token)
            assert [e["message_id"] for s in journey["sessions"] for e in s["events"]] == ["fine"]


def deep_row(message_id: str, user_id: str, ts: float, properties: str, context: str = "{}") -> tuple:
    return (message_id, "event", "Legacy", user_id, None, None, ts, ts, None, properties, context, False, "server",
            "server")


async def test_a_deep_event_stored_before_the_limit_does_not_break_the_journey_or_the_export(analytics):
    """Rows as an earlier vibe (or a plugin's own events) could store them: 500 deep (parses, but
    walking it recursively fails), 5,000 deep (past the parser's stack) and not JSON at all."""
    await post(analytics, "event", {"event": "Normal", "user_id": "old-user", "message_id": "normal",
                                    "timestamp": at(0, 8), "properties": {"k": "v"}})
    rows = [deep_row("deep-500", "old-user", at(0, 9), deep_text(500)),
            deep_row("deep-5000", "old-user", at(0, 9, 1), json.dumps({"ok": True}), deep_text(5000)),
            deep_row("broken", "old-user", at(0, 9, 2), "{not json")]
    for row in rows:
        await analytics.db.execute(
            "INSERT INTO analytics_events (message_id, endpoint, event, user_id, anonymous_id, session_id, ts, "
            "received_at, sent_at, properties, context, is_bot, source, sender_scope) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
    for token in (tokens.user_token("old-user"), None):
        for _ in range(2):  # computed, then from the query cache
            journey = await get(analytics, "journey/old-user", token)
            events = {e["message_id"]: e for s in journey["sessions"] for e in s["events"]}
            assert list(events) == ["normal", "deep-500", "deep-5000", "broken"]
            assert events["normal"]["properties"] == {"k": "v"}
            assert events["deep-500"]["properties"] == {"_unreadable": "too_deep", "_stored": deep_text(500)}
            assert events["deep-5000"]["properties"] == {"ok": True}
            assert events["deep-5000"]["context"]["_unreadable"] == "too_deep"
            assert events["broken"]["properties"] == {"_unreadable": "invalid_json", "_stored": "{not json"}
    resp = await analytics.client.get(f"{PREFIX}/users/old-user/events",
                                      headers=tokens.auth(tokens.user_token("old-user")))
    assert resp.status == 200
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [e["message_id"] for e in lines] == ["normal", "deep-500", "deep-5000", "broken"]
    assert lines[1]["properties"]["_stored"] == deep_text(500)  # nothing of the user's data is lost
    # The rest of the read API is unaffected: the metrics and the erasure still work.
    assert (await get(analytics, "metrics", name="Normal", **{"from": at(0), "to": at(1)}))["series"][0]["count"] == 1
    resp = await analytics.client.delete(f"{PREFIX}/users/old-user", headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 200 and (await resp.json())["events_deleted"] == 4


async def call_users(service, body: bytes | str, token: str) -> tuple[int, dict]:
    return await raw_post(service, USERS, body, tokens.auth(token))


async def test_user_management_bodies_nested_past_the_limit_are_400(service):
    me = str(uuid.uuid4())
    token = tokens.user_token(me)
    cases = [
        json.dumps({"action": "update_profile", "data": {"display_name": nested(40)}}),
        json.dumps({"action": "sync_progress", "data": {"items": [nested(MAX_DEPTH - 2)]}}),  # 33 deep in all
        '{"action": "create_profile", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ]
    for body in cases:
        status, answer = await call_users(service, body, token)
        assert (status, answer["error"]["code"]) == (400, "too_deep"), (body[:60], answer)
        assert answer["error"]["details"] == {"max_depth": MAX_DEPTH} and answer["error"]["request_id"]
    status, answer = await call_users(service, b"{nope", token)
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    status, answer = await call_users(service, json.dumps({"action": "create_profile", "data": {}}), token)
    assert status == 200, answer
    assert await service.db.fetchval("SELECT COUNT(*) FROM profiles WHERE id = %s", (me,)) == 1


async def test_the_limit_leaves_the_ordinary_bodies_alone(analytics):
    """The deepest bodies the platform's own clients send (a Segment batch with context.page,
    a sync_progress batch) are far inside the limit."""
    body = {"writeKey": WRITE_KEY, "sentAt": time.time(), "batch": [
        {"type": "page", "anonymousId": "a-1", "messageId": "seg-1",
         "context": {"page": {"path": "/pricing"}, "library": {"name": "analytics.js"}}}]}
    status, answer = await raw_post(analytics, "/v1/batch", json.dumps(body), {})
    assert status == 200 and answer["accepted"] == 1
