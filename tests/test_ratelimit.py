"""Rate limits through HTTP: headers on every answer, 429s per tier and per IP, the webhook rule,
bounded memory, and adaptive shrinking under event-loop lag."""

import asyncio
import json
import time
import uuid

import tokens
from conftest import load_event, wait_until

from vibe.config import Settings
from vibe.web.keys import LOAD_MONITOR, RATE_LIMITER
from vibe.web.ratelimit import LoadMonitor, RateLimiter

PATH = "/functions/v1/user-management"
CHECK = {"action": "check_access", "data": {"resource_type": "commandment", "resource_id": "1"}}

# Any route an anonymous client may call (health probes are never limited).
ANON_PATH = "/openapi.json"


def limits(resp):
    return (int(resp.headers["X-RateLimit-Limit"]), int(resp.headers["X-RateLimit-Remaining"]),
            int(resp.headers["X-RateLimit-Reset"]))


async def test_every_answer_carries_rate_limit_headers(service):
    for method, path, headers in [("GET", "/health", {}), ("GET", "/nowhere", {}),
                                  ("POST", PATH, {}), ("POST", PATH, tokens.auth("bad.token.here")),
                                  ("POST", PATH, tokens.auth(tokens.user_token()))]:
        resp = await service.client.request(method, path, json=CHECK, headers=headers)
        limit, remaining, reset = limits(resp)
        assert limit > 0 and 0 <= remaining <= limit and reset >= 0, (path, resp.status)
        assert (remaining == limit) == (path == "/health"), path  # probes cost nothing
        assert resp.headers["X-Request-ID"]


async def test_free_tier_gets_429_with_retry_after_and_other_users_do_not(start_service):
    service = await start_service(RATE_LIMITS="free=3,starter=5")
    user = tokens.user_token(str(uuid.uuid4()))
    seen = []
    for _ in range(3):
        resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(user))
        assert resp.status == 200
        seen.append(limits(resp)[:2])
    assert seen == [(3, 2), (3, 1), (3, 0)]
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(user))
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "rate_limited" and body["error"]["request_id"]
    assert int(resp.headers["Retry-After"]) >= 1 and limits(resp)[:2] == (3, 0)
    other = await service.client.post(PATH, json=CHECK, headers=tokens.auth(tokens.user_token()))
    assert other.status == 200
    anonymous = await service.client.get(ANON_PATH)
    assert anonymous.status == 200 and limits(anonymous)[0] == 600


async def test_limits_follow_the_tier(start_service):
    service = await start_service(RATE_LIMITS="free=3,starter=5,admin=7")
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    resp = await service.client.post(PATH, json={"action": "create_profile", "data": {}}, headers=tokens.auth(token))
    assert resp.status == 200 and limits(resp)[0] == 3
    resp = await service.client.post(PATH, json={"action": "update_subscription", "data": {
        "user_id": user_id, "tier": "starter", "reason": "test"}}, headers=tokens.auth(tokens.service_token()))
    assert resp.status == 200
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(token))
    assert resp.status == 200 and limits(resp)[:2] == (5, 4)  # a new bucket for the new tier
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(tokens.admin_token()))
    assert limits(resp)[0] == 7


async def test_anonymous_limit_is_per_ip_and_forwarded_for_needs_a_trusted_proxy(start_service):
    service = await start_service(RATE_LIMIT_ANONYMOUS="2")
    for forwarded in ("10.0.0.1", "10.0.0.2"):
        resp = await service.client.get(ANON_PATH, headers={"X-Forwarded-For": forwarded})
        assert resp.status == 200
    resp = await service.client.get(ANON_PATH, headers={"X-Forwarded-For": "10.0.0.3"})
    assert resp.status == 429  # the peer is not a trusted proxy: X-Forwarded-For is ignored
    # A bad token counts against the IP as well.
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth("x.y.z"))
    assert resp.status == 429

    trusted = await start_service(RATE_LIMIT_ANONYMOUS="2", RATE_LIMIT_TRUSTED_PROXIES="127.0.0.0/8,::1")
    for _ in range(2):
        assert (await trusted.client.get(ANON_PATH, headers={"X-Forwarded-For": "203.0.113.7"})).status == 200
    assert (await trusted.client.get(ANON_PATH, headers={"X-Forwarded-For": "203.0.113.7"})).status == 429
    # the client is the last hop that is not a trusted proxy; what it claims before that is ignored
    spoof = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.1"}
    assert (await trusted.client.get(ANON_PATH, headers=spoof)).status == 429
    assert (await trusted.client.get(ANON_PATH, headers={"X-Forwarded-For": "203.0.113.8"})).status == 200


async def test_webhook_failures_are_limited_but_signed_events_never(start_service):
    service = await start_service(RATE_LIMIT_WEBHOOK_FAILURES="2", RATE_LIMIT_ANONYMOUS="1")
    body = json.dumps(load_event("customer.created")).encode()
    headers = {"Stripe-Signature": f"t={int(time.time())},v1=deadbeef", "Content-Type": "application/json"}
    statuses = []
    for _ in range(3):
        resp = await service.client.post("/functions/v1/stripe-webhook", data=body, headers=headers)
        statuses.append(resp.status)
    assert statuses == [400, 400, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    for _ in range(5):  # far above both limits, from the same source: never throttled
        event = load_event("customer.created")
        event["id"] = f"evt_{uuid.uuid4().hex[:24]}"
        resp = await service.post_event(event)
        assert resp.status == 200 and "X-RateLimit-Limit" in resp.headers


async def test_buckets_are_bounded_by_an_lru(start_service):
    service = await start_service(RATE_LIMIT_MAX_KEYS="100", RATE_LIMIT_TRUSTED_PROXIES="127.0.0.1")
    for i in range(250):
        resp = await service.client.get(ANON_PATH, headers={"X-Forwarded-For": f"10.1.{i // 250}.{i % 250}"})
        assert resp.status == 200
    assert len(service.app[RATE_LIMITER].buckets) == 100


async def test_lower_tiers_shrink_under_event_loop_lag_and_recover(start_service):
    service = await start_service(LOAD_MONITOR_INTERVAL="0.02", LOAD_LAG_THRESHOLD="0.05", LOAD_RECOVERY_SECONDS="1",
                                  RATE_LIMIT_ANONYMOUS="400", RATE_LIMITS="free=200")
    monitor = service.app[LOAD_MONITOR]
    free_user = tokens.user_token()
    expert = tokens.admin_token()
    for _ in range(20):  # block the loop the way a CPU-bound burst would, until the monitor notices
        time.sleep(0.2)
        await asyncio.sleep(0.025)
        if monitor.level >= 2:
            break
    assert monitor.level >= 2
    resp = await service.client.get(ANON_PATH)
    assert limits(resp)[0] < 400
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(free_user))
    assert limits(resp)[0] < 200
    resp = await service.client.post(PATH, json=CHECK, headers=tokens.auth(expert))
    assert limits(resp)[0] == 10000  # admin never shrinks

    async def recovered():
        return limits(await service.client.get(ANON_PATH))[0] == 400

    await wait_until(recovered)


def test_shrinking_order_and_levels():
    settings = Settings.from_env({"RATE_LIMIT_SHRINK_ORDER": "anonymous,free,starter", "RATE_LIMIT_SHRINK_FACTOR": "0.5",
                                  "LOAD_MONITOR_INTERVAL": "0.5", "LOAD_RECOVERY_SECONDS": "1"})
    monitor = LoadMonitor(settings)
    limiter = RateLimiter(settings, monitor)
    assert [limiter.limit_for(t) for t in ("anonymous", "free", "starter", "pro")] == [600, 100, 300, 1000]
    assert monitor.sample(lag=0.3, waiting=0) == 0  # one stall (smoothed to 0.15 s) is not an overload
    monitor.sample(lag=0.0, waiting=0)
    assert monitor.sample(lag=1.0, waiting=0) == 1
    assert [limiter.limit_for(t) for t in ("anonymous", "free", "starter", "pro")] == [300, 100, 300, 1000]
    monitor.sample(lag=0.0, waiting=99)
    monitor.sample(lag=0.0, waiting=99)
    monitor.sample(lag=0.0, waiting=99)
    assert monitor.level == 3
    assert [limiter.limit_for(t) for t in ("anonymous", "free", "starter", "pro")] == [75, 25, 150, 1000]
    monitor.sample(lag=0.0, waiting=0)
    assert monitor.level == 3  # one calm sample is not yet a recovery
    monitor.sample(lag=0.0, waiting=0)
    assert monitor.level == 2 and limiter.limit_for("starter") == 300
    monitor.sample(lag=0.0, waiting=0)
    monitor.sample(lag=0.0, waiting=10)
    monitor.sample(lag=0.0, waiting=0)
    assert monitor.level == 3  # the calm streak starts over after an overloaded sample
