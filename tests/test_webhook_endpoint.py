"""The webhook endpoint's contract: reject cheaply, verify, store exactly once, then answer."""

import asyncio
import json
import time

from conftest import SECRET, load_event, make_event

from vibe.billing import signature as stripe_signature


async def count_events(service) -> int:
    return await service.db.fetchval("SELECT COUNT(*) FROM stripe_events")


async def test_valid_event_is_stored_raw_and_answered(service):
    event = load_event("customer.created")
    body = json.dumps(event, indent=3).encode()  # the raw bytes are kept as sent
    resp = await service.post_event(body)
    assert resp.status == 200
    answer = await resp.json()
    assert answer == {"received": True, "id": event["id"], "type": "customer.created", "duplicate": False,
                      "status": "pending"}
    assert resp.headers["X-Request-ID"]
    row = await service.event_row(event["id"])
    assert row["payload"] == body.decode()
    assert row["type"] == "customer.created" and int(row["created"]) == event["created"]
    assert row["api_version"] == "2020-08-27" and not row["livemode"] and row["account"] is None


async def test_missing_and_malformed_signatures_are_400_and_store_nothing(service):
    body = json.dumps(load_event("customer.created")).encode()
    cases = [
        ({}, "missing_signature"),
        ({"Stripe-Signature": "garbage"}, "malformed_signature"),
        ({"Stripe-Signature": "t=abc,v1=00"}, "malformed_signature"),
        ({"Stripe-Signature": f"t={int(time.time())}"}, "malformed_signature"),
        ({"Stripe-Signature": f"t={int(time.time())},v1=deadbeef"}, "invalid_signature"),
        ({"Stripe-Signature": stripe_signature.sign(body, "whsec_someone_else")}, "invalid_signature"),
        ({"Stripe-Signature": stripe_signature.sign(body + b" ", SECRET)}, "invalid_signature"),
    ]
    for headers, code in cases:
        resp = await service.client.post("/functions/v1/stripe-webhook", data=body, headers=headers)
        assert resp.status == 400, headers
        error = (await resp.json())["error"]
        assert error["code"] == code and error["message"] and error["request_id"]
    assert await count_events(service) == 0


async def test_stale_and_future_timestamps_are_refused(start_service):
    service = await start_service(STRIPE_WEBHOOK_TOLERANCE="60")
    event = load_event("customer.created")
    for skew in (-61, 61, -3600):
        resp = await service.post_event(event, timestamp=int(time.time()) + skew)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "timestamp_out_of_tolerance"
    resp = await service.post_event(event, timestamp=int(time.time()) - 50)
    assert resp.status == 200
    assert await count_events(service) == 1


async def test_secret_rotation_accepts_every_configured_secret(start_service):
    service = await start_service(STRIPE_WEBHOOK_SECRET="whsec_old, whsec_new")
    for i, secret in enumerate(("whsec_old", "whsec_new")):
        resp = await service.post_event(make_event("customer.created", {"id": f"cus_rot{i}", "object": "customer"}),
                                         secret=secret)
        assert resp.status == 200
    resp = await service.post_event(load_event("customer.created"), secret=SECRET)
    assert resp.status == 400
    # Stripe signs with both secrets while one is being rolled: any matching v1 is enough.
    body = json.dumps(make_event("customer.created", {"id": "cus_both", "object": "customer"})).encode()
    ts = int(time.time())
    header = f"t={ts},v1={stripe_signature.compute(body, ts, 'whsec_expired')},v1={stripe_signature.compute(body, ts, 'whsec_new')}"
    resp = await service.client.post("/functions/v1/stripe-webhook", data=body, headers={"Stripe-Signature": header})
    assert resp.status == 200


async def test_oversized_body_is_413_before_anything_is_stored(service):
    big = json.dumps(make_event("customer.created", {"id": "cus_big", "object": "customer",
                                                      "description": "x" * (1024 * 1024)})).encode()
    resp = await service.post_event(big)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await count_events(service) == 0


async def test_signed_bodies_that_are_not_events_are_400(service):
    bad = [
        b"not json",
        b"[1, 2]",
        json.dumps({"id": "evt_1", "type": "customer.created", "created": 1}).encode(),
        json.dumps({"id": 5, "type": "x", "created": "yesterday", "data": {"object": {}}}).encode(),
        json.dumps({"id": "evt_2", "type": "customer.created", "created": 1, "livemode": "no",
                    "data": {"object": {"id": "cus"}}}).encode(),
        "\udcff".encode("utf-8", "surrogatepass"),
    ]
    for body in bad:
        resp = await service.post_event(body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] in ("invalid_json", "invalid_event")
    resp = await service.post_event(bad[3])
    details = (await resp.json())["error"]["details"]
    assert any(d.startswith("id:") for d in details) and any(d.startswith("created:") for d in details)
    assert await count_events(service) == 0


async def test_duplicate_delivery_is_200_once_stored(service):
    event = load_event("customer.created")
    first, second = await service.deliver(event, event)
    assert first["duplicate"] is False
    assert second["duplicate"] is True and second["status"] == "duplicate"
    assert await count_events(service) == 1


async def test_concurrent_copies_store_one_row(service):
    event = make_event("customer.created", {"id": "cus_race", "object": "customer", "email": "race@example.com"})
    answers = await asyncio.gather(*(service.post_event(event) for _ in range(20)))
    assert [r.status for r in answers] == [200] * 20
    bodies = [await r.json() for r in answers]
    assert sum(1 for b in bodies if not b["duplicate"]) == 1
    assert await count_events(service) == 1


async def test_unknown_type_is_stored_ignored_and_acknowledged(service):
    event = make_event("product.created", {"id": "prod_1", "object": "product"})
    await service.deliver(event)
    row = await service.event_row(event["id"])
    assert row["status"] == "ignored" and "no handler" in row["note"]


async def test_livemode_filter_stores_but_skips(start_service):
    service = await start_service(STRIPE_LIVEMODE="live")
    test_event = make_event("customer.created", {"id": "cus_t", "object": "customer", "metadata": {"user_id": "u1"}})
    live_event = make_event("customer.created", {"id": "cus_l", "object": "customer", "metadata": {"user_id": "u2"}},
                            livemode=True, account="acct_123")
    answers = await service.deliver(test_event, live_event)
    assert answers[0]["status"] == "skipped" and answers[1]["status"] == "pending"
    assert (await service.event_row(test_event["id"]))["status"] == "skipped"
    live = await service.event_row(live_event["id"])
    assert live["status"] == "processed" and live["account"] == "acct_123" and live["livemode"]
    assert await service.user("u1") is None
    assert (await service.user("u2"))["stripe_customer_id"] == "cus_l"


async def test_other_methods_and_paths_answer_json_errors(service):
    resp = await service.client.get("/functions/v1/stripe-webhook")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    resp = await service.client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_health_reports_database_and_queue(service):
    resp = await service.client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy" and body["database"]["reachable"] is True
    assert body["stripe_events"] == {"pending": 0, "failed": 0, "waiting": 0, "dead": 0}


async def test_deeply_nested_signed_body_is_400_not_500(service):
    body = b'{"id": "evt_deep", "type": "customer.created", "created": 1, "data": {"object": ' + b"[" * 100000 + b"]" * 100000 + b"}}"
    resp = await service.post_event(body)
    assert resp.status == 400 and (await resp.json())["error"]["code"] in ("invalid_json", "too_deep")
    assert await count_events(service) == 0


async def test_health_probes_are_never_rate_limited(start_service):
    service = await start_service(RATE_LIMIT_ANONYMOUS="2")
    for _ in range(6):
        assert (await service.client.get("/health")).status == 200
    statuses = [(await service.client.get("/functions/v1/user-management")).status for _ in range(4)]
    assert 429 in statuses  # the same client is limited elsewhere
