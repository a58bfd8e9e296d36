"""Failures are retried from the stored row, dead-lettered, replayed; restarts resume the work."""

import json

import pytest
from conftest import ROOT, make_event, run_cli
from stripe_support import fixture, link_user

from vibe.plugins.hookspecs import hookimpl

FLAKY_DIR = str(ROOT / "tests" / "plugins_flaky")


@pytest.fixture
def flaky(tmp_path, monkeypatch, env):
    marker = tmp_path / "flaky-marker"
    monkeypatch.setenv("FLAKY_MARKER", str(marker))
    env.update(VIBE_PLUGINS_DIRS=FLAKY_DIR, STRIPE_EXTRA_EVENT_TYPES="")
    return marker


def customer_updated() -> dict:
    return make_event("customer.updated", {"id": "cus_flaky", "object": "customer"})


async def test_a_failing_handler_is_retried_with_backoff_until_it_succeeds(start_service, flaky):
    # Each failed attempt calls the handler once: every event runs in a savepoint of its own,
    # so no batch is run again to find out which event failed. Two failing calls, two attempts.
    flaky.write_text("2")
    service = await start_service()
    event = customer_updated()
    assert (await service.post_event(event)).status == 200
    row = await service.wait_status(event["id"], "processed")
    assert row["attempts"] == 2 and row["last_error"] is None and row["note"] == "flaky handler succeeded"
    # The failed attempts rolled back: exactly one effect.
    assert await service.db.fetchval("SELECT COUNT(*) FROM review_flags") == 1


async def test_a_handler_that_keeps_failing_is_dead_lettered(start_service, flaky):
    flaky.write_text("always")
    service = await start_service(STRIPE_MAX_ATTEMPTS="3")
    event = customer_updated()
    await service.post_event(event)
    row = await service.wait_status(event["id"], "dead")
    assert row["attempts"] == 3 and "always failing" in row["last_error"] and row["next_attempt_at"] is None
    assert await service.db.fetchval("SELECT COUNT(*) FROM review_flags") == 0
    health = await (await service.client.get("/health")).json()
    assert health["stripe_events"]["dead"] == 1


async def test_replay_from_the_cli_processes_a_dead_event_once(start_service, flaky, env):
    flaky.write_text("always")
    env["STRIPE_RETRY_BASE_SECONDS"] = "600"  # the service must not retry behind the CLI's back
    service = await start_service(STRIPE_MAX_ATTEMPTS="1")
    event = customer_updated()
    await service.post_event(event)
    await service.wait_status(event["id"], "dead")
    cli_env = {**env, "FLAKY_MARKER": str(flaky)}

    code, out, err = await run_cli("events", "replay", event["id"], "--json", env=cli_env)
    assert code == 1 and json.loads(out)[0]["status"] == "failed", err  # still failing: says so

    flaky.write_text("0")
    code, out, err = await run_cli("events", "replay", "--failed", "--json", env=cli_env)
    assert code == 0, err
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(event["id"], "processed")]
    code, out, _ = await run_cli("events", "replay", event["id"], "--json", env=cli_env)
    assert code == 0 and json.loads(out)[0]["status"] == "processed"
    assert await service.db.fetchval("SELECT COUNT(*) FROM review_flags") == 1  # replays are idempotent

    code, _, err = await run_cli("events", "replay", "evt_missing", env=cli_env)
    assert code == 1 and "no Stripe event evt_missing" in err


async def test_a_restart_resumes_pending_and_failed_work(start_service, flaky):
    flaky.write_text("0")
    ingest_only = await start_service(VIBE_STRIPE_WORKER="0")
    events = [make_event("customer.updated", {"id": f"cus_{i}", "object": "customer"}) for i in range(5)]
    for event in events:
        assert (await ingest_only.post_event(event)).status == 200
    statuses = await ingest_only.db.fetchall("SELECT status FROM stripe_events")
    assert {r["status"] for r in statuses} == {"pending"}
    await ingest_only.client.close()  # the process "stops" with work pending

    restarted = await start_service()
    for event in events:
        await restarted.wait_status(event["id"], "processed")
    assert await restarted.db.fetchval("SELECT COUNT(*) FROM review_flags") == 5


async def test_replayed_billing_event_changes_nothing(service, env):
    await link_user(service)
    invoice = fixture("invoice.payment_succeeded", created=1_700_000_100)
    await service.deliver(invoice)
    code, out, err = await run_cli("events", "replay", invoice["id"], "--json", env=env)
    assert code == 0, err
    assert json.loads(out)[0]["status"] == "processed"
    assert len((await service.user("user-1"))["payments"]) == 1


class FailOneAttempt:
    """Fails the named event's first attempt (its run in the batch, then alone in a savepoint),
    after its handler and every domain hook have run: its billing analytics event has been
    gathered for the batch's multi-row write by then."""

    def __init__(self, event_id: str):
        self.event_id, self.calls = event_id, 0

    @hookimpl
    def stripe_event_processed(self, ctx, event):
        if event["id"] == self.event_id:
            self.calls += 1
            if self.calls <= 2:
                raise RuntimeError("fails one attempt, late")


async def test_an_event_failing_in_a_batch_leaves_nothing_gathered_behind(start_service):
    """Rows gathered per batch (tx.collect) are written once for the events that committed: the
    failed event's revenue event is dropped with its savepoint and written by its retry."""
    ingest_only = await start_service(VIBE_STRIPE_WORKER="0")
    customer = make_event("customer.created", {"id": "cus_batch", "object": "customer", "email": "b@example.com",
                                               "metadata": {"user_id": "batch-user"}}, created=1_700_000_000)
    invoices = [make_event("invoice.payment_succeeded", {
        "id": f"in_batch{i}", "object": "invoice", "customer": "cus_batch", "amount_paid": 1000 * i,
        "currency": "usd", "payment_intent": f"pi_batch{i}"}, created=1_700_000_010 + i) for i in (1, 2)]
    for event in (customer, *invoices):
        assert (await ingest_only.post_event(event)).status == 200
    await ingest_only.client.close()

    flaky = FailOneAttempt(invoices[0]["id"])
    service = await start_service(extra_plugins=(flaky,), STRIPE_RETRY_BASE_SECONDS="2")  # retried after 1-2 s
    await service.wait_status(invoices[1]["id"], "processed")

    async def revenue_events():
        rows = await service.db.fetchall(
            "SELECT properties FROM analytics_events WHERE endpoint = 'subscription-event' ORDER BY ts")
        return [json.loads(r["properties"])["amount"] for r in rows]

    assert (await service.event_row(invoices[0]["id"]))["status"] == "failed"
    assert await revenue_events() == [2000]  # not the copy gathered before the failure
    await service.wait_status(invoices[0]["id"], "processed")
    assert await revenue_events() == [1000, 2000]
    assert await service.db.fetchval("SELECT SUM(amount) FROM analytics_revenue") == 3000
