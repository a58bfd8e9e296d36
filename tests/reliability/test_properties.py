"""Property-based tests (hypothesis): whatever a client sends, the answer is never a 5xx.

Bodies are drawn from the endpoints' own shapes with every field replaced, now and then, by
any JSON value (strings with control characters, surrogates, huge numbers, nesting), and from
arbitrary JSON; a 4xx must carry the error envelope. One service serves every example (its
data accumulates, as a real one's would).
"""

import json

import pytest
import tokens
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.reliability

USERS = "/functions/v1/user-management"
ANALYTICS = "/functions/v1/analytics-tracking"
WRITE_KEY = "wk_properties"
USER_IDS = ["0b5e1f0e-0000-4000-8000-000000000001", "0b5e1f0e-0000-4000-8000-000000000002"]
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# Any code point, lone surrogates included, with the troublesome ones drawn often.
chars = st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\udfff", "'", "%", "{", "\u202e"])
text = st.text(alphabet=chars, max_size=40) | st.sampled_from(
    ["", " ", "\x00", "\ud800", "1", "workshop", "pro", "https://x.example/a.png", "en-US", "'; DROP TABLE x; --"])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                        max_leaves=12)


def maybe(value):
    """The field's plausible value, or sometimes anything at all."""
    return value | anything


item = st.fixed_dictionaries({
    "resource_type": maybe(st.sampled_from(["workshop", "commandment", "template"])),
    "resource_id": maybe(st.integers(1, 12).map(str)),
    "status": maybe(st.sampled_from(["not_started", "in_progress", "completed"])),
}, optional={"progress": maybe(st.integers(-5, 105)), "completed_at": maybe(st.floats(0, 2e9) | text)})

actions = {
    "create_profile": st.fixed_dictionaries({}, optional={
        "display_name": maybe(text), "avatar_url": maybe(text), "locale": maybe(text),
        "marketing_consent": maybe(st.booleans()), "referral_code": maybe(text)}),
    "update_profile": st.fixed_dictionaries({}, optional={
        "display_name": maybe(text), "full_name": maybe(text), "locale": maybe(text), "tier": maybe(text)}),
    "get_profile": st.fixed_dictionaries({}, optional={"user_id": maybe(text)}),
    "check_access": st.fixed_dictionaries({"resource_type": maybe(text), "resource_id": maybe(text)}),
    "sync_progress": st.fixed_dictionaries({"items": maybe(st.lists(item, max_size=5))}),
    "update_subscription": st.fixed_dictionaries({"user_id": maybe(text), "tier": maybe(text),
                                                  "reason": maybe(text)}),
    "bulk_update": st.fixed_dictionaries({"items": maybe(st.lists(st.dictionaries(text, anything), max_size=3))}),
}
requests = st.sampled_from(sorted(actions)).flatmap(
    lambda a: st.fixed_dictionaries({"action": st.just(a), "data": maybe(actions[a])}))
who = st.sampled_from(["user", "admin", "service", "none"])


@pytest.fixture
async def service(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, RATE_LIMIT_ANONYMOUS="100000",
                                  RATE_LIMITS="free=100000,starter=100000,pro=100000,expert=100000,admin=100000")
    for user in USER_IDS:  # profiles exist, so the updates reach the database
        resp = await service.client.post(USERS, json={"action": "create_profile", "data": {}},
                                         headers=tokens.auth(tokens.user_token(user)))
        assert resp.status == 200
    return service


def headers_for(role: str, user_id: str) -> dict:
    token = {"user": tokens.user_token(user_id), "admin": tokens.admin_token(user_id),
             "service": tokens.service_token()}.get(role)
    return tokens.auth(token) if token else {}


async def assert_4xx_or_ok(resp, sent) -> None:
    assert resp.status < 500, (resp.status, sent, await resp.text())
    if resp.status >= 400:
        error = (await resp.json())["error"]
        assert error["code"] and error["message"] and error["request_id"]


@EXAMPLES
@given(body=requests | anything, role=who, user=st.sampled_from(USER_IDS))
async def test_user_management_never_answers_5xx(service, body, role, user):
    resp = await service.client.post(USERS, data=json.dumps(body), headers={
        "Content-Type": "application/json", **headers_for(role, user)})
    await assert_4xx_or_ok(resp, body)


event = st.fixed_dictionaries({}, optional={
    "event": maybe(text), "user_id": maybe(st.sampled_from(["u-1", "u-2"])), "anonymous_id": maybe(text),
    "message_id": maybe(text), "timestamp": maybe(st.floats(0, 4e9) | text), "sent_at": maybe(text),
    "properties": maybe(st.dictionaries(text, anything, max_size=4)), "context": maybe(anything),
    "session_id": maybe(text)})
endpoints = st.sampled_from(["event", "user-behavior", "page-view", "workshop-completion", "business-metric",
                             "subscription-event", "nope"])


@EXAMPLES
@given(endpoint=endpoints, body=event | st.fixed_dictionaries({"batch": st.lists(event, max_size=4)}) | anything,
       auth=st.sampled_from(["write_key", "user", "none"]))
async def test_analytics_ingest_never_answers_5xx(service, endpoint, body, auth):
    headers = {"X-Write-Key": WRITE_KEY} if auth == "write_key" else headers_for(auth, "u-1")
    resp = await service.client.post(f"{ANALYTICS}/{endpoint}", data=json.dumps(body),
                                     headers={"Content-Type": "application/json", **headers})
    await assert_4xx_or_ok(resp, body)


query_value = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20) | st.sampled_from(
    ["", "0", "-1", "1e309", "2026-11-26", "9" * 30, "day", "hour"])


@EXAMPLES
@given(path=st.sampled_from(["metrics", "funnel", "business", "journey/u-1", "aggregates/pages",
                             "aggregates/revenue", "aggregates/nope", "users/u-1/events"]),
       query=st.dictionaries(st.sampled_from(["name", "from", "to", "interval", "steps", "limit"]), query_value,
                             max_size=4))
async def test_analytics_reads_never_answer_5xx(service, path, query):
    resp = await service.client.get(f"{ANALYTICS}/{path}", params=query,
                                    headers=tokens.auth(tokens.service_token()))
    await assert_4xx_or_ok(resp, query)


@EXAMPLES
@given(body=st.fixed_dictionaries({
    "user_id": maybe(st.sampled_from(USER_IDS)), "type": maybe(st.sampled_from(
        ["welcome", "payment_confirmation", "workshop_completion", "achievement", "weekly_progress", "nope"])),
    "data": maybe(st.fixed_dictionaries({}, optional={
        "amount": maybe(st.integers()), "currency": maybe(st.sampled_from(["usd", "jpy", "EUR"])),
        "description": maybe(text), "workshop_id": maybe(text), "achievement": maybe(anything)}))},
    optional={"idempotency_key": maybe(text)}) | anything)
async def test_email_requests_never_answer_5xx(service, body):
    resp = await service.client.post("/functions/v1/email-notifications", data=json.dumps(body), headers={
        "Content-Type": "application/json", **tokens.auth(tokens.service_token())})
    await assert_4xx_or_ok(resp, body)
