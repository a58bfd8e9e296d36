"""GET /health and /functions/v1/<function>/health in each state; /metrics moving after traffic."""

import json
import logging
import re
import time

import tokens
from conftest import make_event
from ops_support import TroublePlugin

from vibe.ops import health
from vibe.ops.logs import JsonFormatter, RequestIdFilter
from vibe.plugins.hookspecs import hookimpl
from vibe.web.times import to_seconds


async def test_health_is_healthy_with_every_part_reported(service):
    resp = await service.client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy" and body["version"] and body["uptime_seconds"] >= 0
    assert body["database"]["reachable"] is True and body["database"]["round_trip_ms"] >= 0
    assert set(body["pool"]) == {"size", "in_use", "waiting"}
    assert {"stripe-webhook", "user-management"} <= set(body["functions"])
    assert body["queues"]["stripe_dead"] == 0
    assert "user_session" in body["caches"]


class ClockProbe:
    """A function whose probe reports times, as Unix seconds (what a probe gives)."""

    @hookimpl
    def register_routes(self, app):
        async def probe(app):
            return {"status": "healthy", "checked_at": 1796173172, "durations": {"retry_in_seconds": 5},
                    "runs": [{"last_run_at": 1796173172.25, "took_ms": 12.5}], "never_at": None}

        health.register(app, "clock", probe)


async def test_times_in_health_answers_are_iso_8601_and_durations_stay_numbers(start_service):
    service = await start_service(extra_plugins=(ClockProbe(),))
    body = await (await service.client.get("/health")).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["started_at"])
    assert to_seconds(body["started_at"]) <= time.time() and isinstance(body["uptime_seconds"], (int, float))
    clock = body["functions"]["clock"]
    assert clock["checked_at"] == "2026-12-02T00:59:32Z"
    assert clock["runs"][0]["last_run_at"] == "2026-12-02T00:59:32.250Z"
    assert clock["durations"]["retry_in_seconds"] == 5 and clock["runs"][0]["took_ms"] == 12.5
    assert clock["never_at"] is None and isinstance(clock["latency_ms"], (int, float))
    assert body["functions"]["stripe-webhook"]["dispatcher"]["last_error_at"] is None
    one = await (await service.client.get("/functions/v1/clock/health")).json()
    assert one["checked_at"] == "2026-12-02T00:59:32Z" and one["function"] == "clock"


async def test_a_dead_stripe_event_degrades_billing_and_the_service(service):
    await service.deliver(make_event("customer.created", {"id": "cus_dead1", "object": "customer"}))
    await service.db.execute("UPDATE stripe_events SET status = 'dead'")
    body = await (await service.client.get("/health")).json()
    assert body["status"] == "degraded" and body["queues"]["stripe_dead"] == 1
    one = await service.client.get("/functions/v1/stripe-webhook/health")
    assert one.status == 200
    assert (await one.json())["status"] == "degraded"
    users = await (await service.client.get("/functions/v1/user-management/health")).json()
    assert users["status"] == "healthy"


async def test_analytics_health_is_not_shadowed_by_its_endpoint_route(service):
    resp = await service.client.get("/functions/v1/analytics-tracking/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["function"] == "analytics-tracking" and body["queues"] == {"analytics_batcher": 0}
    assert body["figures"] == {"events last hour": 0}


async def test_an_open_email_breaker_and_dead_emails_degrade_email_and_the_service(service):
    from vibe.email.keys import EMAIL_WORKER
    from vibe.ops.keys import BREAKERS

    body = await (await service.client.get("/functions/v1/email-notifications/health")).json()
    assert body["status"] == "healthy" and body["sender_breaker"] == "closed"
    breaker = service.app[EMAIL_WORKER].breaker
    for _ in range(breaker.failure_threshold):  # what the worker records when the provider keeps failing
        breaker.record_failure()
    assert service.app[BREAKERS].snapshot()[breaker.name]["state"] == "open"
    doc = await (await service.client.get("/health")).json()
    assert doc["status"] == "degraded" and doc["circuit_breakers"][breaker.name]["state"] == "open"
    assert doc["functions"]["email-notifications"]["status"] == "degraded"
    metrics = await (await service.client.get("/metrics")).text()
    assert sample(metrics, "vibe_circuit_breaker_state", breaker=breaker.name) == 2
    breaker.record_success()
    await service.db.execute(
        "INSERT INTO email_messages (idempotency_key, user_id, recipient, type, category, data, status, "
        "message_id, created_at, updated_at) VALUES ('k1', 'u1', 'a@example.com', 'welcome', 'account', '{}', "
        "'dead', 'm1', 1, 1)")
    doc = await (await service.client.get("/health")).json()
    assert doc["status"] == "degraded" and doc["queues"]["email_dead"] == 1
    metrics = await (await service.client.get("/metrics")).text()
    assert sample(metrics, "vibe_emails", status="dead") == 1


async def test_database_down_is_unhealthy_503(service):
    await service.db.close()
    resp = await service.client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unhealthy" and body["database"]["reachable"] is False
    assert body["functions"]["stripe-webhook"]["status"] == "unhealthy"
    one = await service.client.get("/functions/v1/user-management/health")
    assert one.status == 503


async def test_unknown_function_health_is_a_json_404(service):
    resp = await service.client.get("/functions/v1/nope/health")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["code"] == "unknown_function" and "stripe-webhook" in body["error"]["details"]["functions"]


def sample(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_metrics_move_after_traffic(start_service):
    service = await start_service(extra_plugins=(TroublePlugin(),), RATE_LIMITS="free=3")
    before = await (await service.client.get("/metrics")).text()
    assert sample(before, "vibe_up", function="all") == 1.0
    await service.deliver(make_event("customer.created", {"id": "cus_m1", "object": "customer"}))
    for _ in range(5):
        await service.client.post("/functions/v1/user-management", json={"action": "get_profile"},
                                  headers=tokens.auth(tokens.user_token("u-metrics")))
    resp = await service.client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert sample(text, "vibe_http_requests_total", function="stripe-webhook", method="POST", status="200") == 1
    assert sample(text, "vibe_http_requests_total", function="user-management", status="429") >= 2
    assert sample(text, "vibe_rate_limit_rejections_total", tier="free") >= 2
    assert sample(text, "vibe_http_request_duration_seconds_count", function="stripe-webhook") == 1
    assert sample(text, "vibe_stripe_events", type="customer.created", status="ignored") == 1
    for name in ("vibe_db_pool", "vibe_event_loop_lag_seconds", "vibe_cache_hits_total", "vibe_queue_depth",
                 "vibe_database_reachable"):
        assert f"\n{name}" in text, name


async def test_every_log_line_of_a_request_carries_its_request_id(start_service):
    service = await start_service(extra_plugins=(TroublePlugin(),))
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(handler.format(record))
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        await service.client.get("/test/slow", headers={"X-Request-ID": "req-slow-1"})
        resp = await service.client.get("/test/boom", headers={"X-Request-ID": "req-boom-1"})
        assert resp.status == 500 and (await resp.json())["error"]["request_id"] == "req-boom-1"
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    lines = [json.loads(r) for r in records]
    slow = [line for line in lines if line["message"] == "slow answer"]
    boom = [line for line in lines if "unhandled error" in line["message"]]
    assert slow and slow[0]["request_id"] == "req-slow-1"
    assert boom and boom[0]["request_id"] == "req-boom-1" and "boom for the test" in boom[0]["exception"]
