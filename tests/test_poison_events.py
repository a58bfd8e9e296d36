"""No event stops the others (issue 15): validly signed events holding text no database can hold
(NUL, lone surrogates), bodies nested too deep, an event whose transaction fails as a whole; the
good events around them are processed, the raw body is kept byte for byte, and /health, /metrics
and the alert watchdog say so when the dispatcher keeps failing. Both databases, through HTTP."""

import asyncio
import json
import time
import uuid

from conftest import make_event, wait_until

from vibe.billing.keys import DISPATCHER
from vibe.plugins.hookspecs import hookimpl

U = "\ufffd"  # what a handler's columns get instead (vibe.db.database.safe_text)


def customer(user_id: str, **fields) -> dict:
    obj = {"id": f"cus_{uuid.uuid4().hex[:14]}", "object": "customer", "email": f"{user_id}@x.test",
           "metadata": {"user_id": user_id}}
    obj.update(fields)
    return make_event("customer.created", obj)


async def test_poisoned_events_among_100_good_ones_stop_nothing(start_service):
    service = await start_service()
    good = [customer(f"good-{i}") for i in range(100)]
    poisoned = {
        "email": customer("p-email", email="a\u0000b@x.test"),
        "surrogate_email": customer("p-sur", email="\ud800@x.test"),
        "name": customer("p-name", name="\ud800 N\u0000"),
        "metadata": customer("p-meta", metadata={"user_id": "p-meta", "k\u0000\udfff": "v\u0000\ud800"}),
        "description": customer("p-desc", description="d\u0000\udc00"),
    }
    bad_ids = [make_event("customer.created", {"id": "cus_x", "object": "customer"}, event_id=event_id)
               for event_id in ("evt_\u0000nul", "evt_\ud800lone", "\udfff")]
    deep = (b'{"id": "evt_deep", "object": "event", "type": "customer.created", "created": 1, '
            b'"data": {"object": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}")
    poisoned["raw"] = customer("p-raw", name="Zo\u00eb\u0000")
    raw = json.dumps(poisoned["raw"], ensure_ascii=False).encode()  # raw UTF-8 (NUL still escaped)
    assert b"\\u0000" in raw and "\u00eb".encode() in raw

    health: list[int] = []

    async def watch():
        while True:
            health.append((await service.client.get("/health")).status)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    bodies = [*good[:50], *poisoned.values(), *good[50:]]
    answers = await asyncio.gather(
        *(service.post_event(raw if event is poisoned["raw"] else event) for event in bodies),
        *(service.post_event(event) for event in bad_ids), service.post_event(deep))
    try:
        statuses = [a.status for a in answers]
        assert statuses[:len(bodies)] == [200] * len(bodies)
        for answer in answers[len(bodies):-1]:  # the event id keys the row: refused at the door
            body = await answer.json()
            assert answer.status == 400 and body["error"]["code"] == "invalid_event", body
            assert any("NUL or unpaired surrogate" in d for d in body["error"]["details"])
        body = await answers[-1].json()
        assert answers[-1].status == 400 and body["error"]["code"] == "too_deep", body
        await service.settle(30)
    finally:
        watcher.cancel()
    assert health and set(health) == {200}  # answered all the while

    rows = {r["id"]: r for r in await service.db.fetchall("SELECT id, status, payload, last_error FROM stripe_events")}
    assert len(rows) == 106
    assert all(rows[e["id"]]["status"] == "processed" for e in good), [
        rows[e["id"]] for e in good if rows[e["id"]]["status"] != "processed"][:3]
    for name, event in poisoned.items():
        assert rows[event["id"]]["status"] == "processed", (name, rows[event["id"]])
    assert rows[poisoned["raw"]["id"]]["payload"].encode() == raw  # byte for byte
    assert rows[poisoned["email"]["id"]]["payload"].encode() == json.dumps(poisoned["email"]).encode()
    profiles = {r["id"]: r for r in await service.db.fetchall(
        "SELECT id, email, full_name FROM profiles WHERE id LIKE %s", ("p-%",))}
    assert profiles["p-email"]["email"] == f"a{U}b@x.test"
    assert profiles["p-sur"]["email"] == f"{U}@x.test"
    assert profiles["p-name"]["full_name"] == f"{U} N{U}"
    assert profiles["p-raw"]["full_name"] == f"Zo\u00eb{U}"
    assert set(profiles) == {"p-email", "p-sur", "p-name", "p-meta", "p-desc", "p-raw"}
    doc = await (await service.client.get("/health")).json()
    assert doc["functions"]["stripe-webhook"]["status"] == "healthy", doc["functions"]["stripe-webhook"]


class AbortsItsTransaction:
    """A handler whose first statement fails its whole round trip unrun (a syntax error, on
    PostgreSQL the deferred SAVEPOINT with it): the batch's transaction cannot be saved."""

    @hookimpl
    def register_stripe_handlers(self):
        async def handler(ctx):
            await ctx.tx.execute("SELEC 1")

        return {"test.poison": handler}


async def test_an_event_that_aborts_its_transaction_fails_alone_and_is_dead_lettered(start_service, caplog):
    service = await start_service(extra_plugins=(AbortsItsTransaction(),), STRIPE_EXTRA_EVENT_TYPES="test.poison",
                                  STRIPE_MAX_ATTEMPTS="2", STRIPE_RETRY_BASE_SECONDS="0.05")
    good = [customer(f"u-{i}") for i in range(20)]
    poison = make_event("test.poison", {"id": "obj_1", "object": "thing"})
    answers = await asyncio.gather(*(service.post_event(e) for e in [*good[:10], poison, *good[10:]]))
    assert [a.status for a in answers] == [200] * 21
    row = await service.wait_status(poison["id"], "dead", timeout=20)
    assert "syntax error" in row["last_error"] and row["attempts"] == 2
    await service.settle(20)
    statuses = {r["status"] for r in await service.db.fetchall(
        "SELECT status FROM stripe_events WHERE type = 'customer.created'")}
    assert statuses == {"processed"}
    if service.settings.db.dialect == "postgresql":  # there the batch failed as a whole, and was run one by one
        assert any("failed as a whole" in r.getMessage() and "running them one by one" in r.getMessage()
                   for r in caplog.records)
        assert service.app[DISPATCHER].last_error is not None


async def test_a_stored_body_too_deep_for_the_handlers_is_one_failed_event(start_service):
    """A row stored before the door checked depth: it fails (retried, then dead), the next is processed."""
    service = await start_service(VIBE_STRIPE_WORKER="0")
    deep = make_event("customer.created", {"id": "cus_deep", "object": "customer", "metadata": {"user_id": "d"}})
    nested: dict = {}
    for _ in range(100):
        nested = {"n": nested}
    deep["data"]["object"]["x"] = nested
    later = customer("after-deep")
    assert (await service.post_event(later)).status == 200
    await service.db.execute(
        "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, status, next_attempt_at) "
        "VALUES (%s, %s, %s, FALSE, %s, %s, 'pending', %s)",
        (deep["id"], deep["type"], deep["created"] - 10, json.dumps(deep), time.time(), time.time()))
    await service.client.close()
    worker = await start_service(STRIPE_MAX_ATTEMPTS="2")
    row = await worker.wait_status(deep["id"], "dead", timeout=20)
    assert "too_deep" in row["last_error"]
    assert (await worker.wait_status(later["id"], "processed"))["status"] == "processed"


async def test_a_due_event_nobody_processes_degrades_health_metrics_and_fires_the_alert(start_service, receiver):
    received, url = receiver
    ingest_only = await start_service(VIBE_STRIPE_WORKER="0", STRIPE_DUE_AGE_SECONDS="1", ALERT_WEBHOOK=url,
                                      ALERT_CHECK_SECONDS="0.05")
    assert (await ingest_only.post_event(customer("stuck"))).status == 200
    doc = await (await ingest_only.client.get("/health")).json()
    assert doc["functions"]["stripe-webhook"]["status"] == "healthy"

    async def firing() -> bool:
        return any(m["alert"] == "failing:stripe-webhook" and m["state"] == "firing" for m in received)

    await wait_until(firing, 10)
    doc = await (await ingest_only.client.get("/health")).json()
    probe = doc["functions"]["stripe-webhook"]
    assert doc["status"] == "degraded" and probe["status"] == "degraded"
    assert "oldest due Stripe event has waited" in probe["failing"] and "STRIPE_DUE_AGE_SECONDS=1" in probe["error"]
    metrics = await (await ingest_only.client.get("/metrics")).text()
    assert 'vibe_function_failing{function="stripe-webhook"} 1.0' in metrics


async def test_batches_failing_in_a_row_degrade_health(start_service):
    """STRIPE_FAILING_BATCHES=1: one batch failed as a whole (recorded as the dispatcher records
    it) degrades the probe, with the error; the next batch that commits ends it. (No loop of
    its own here: the test runs the dispatcher's batches itself.)"""
    service = await start_service(STRIPE_FAILING_BATCHES="1", VIBE_STRIPE_WORKER="0")
    service.app[DISPATCHER]._batch_failed(RuntimeError("the database refused the batch"))
    doc = await (await service.client.get("/health")).json()
    probe = doc["functions"]["stripe-webhook"]
    assert probe["status"] == "degraded" and "last 1 batches failed" in probe["failing"], probe
    assert "the database refused the batch" in probe["error"]
    assert probe["dispatcher"]["failed_batches"] == 1
    assert (await service.post_event(customer("resets"))).status == 200
    assert await service.app[DISPATCHER].process_due() == 1  # a batch that commits ends it
    doc = await (await service.client.get("/health")).json()
    assert doc["functions"]["stripe-webhook"]["status"] == "healthy"
    assert "failing" not in doc["functions"]["stripe-webhook"]
