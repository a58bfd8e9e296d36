"""Events that need configuration wait for the operator instead of a timer; `events list` says
why an event ended as it did; the stripe-webhook probe counts events processed (issue 18)."""

import asyncio
import json
import logging
import time

import pytest
from conftest import ROOT, make_event, run_cli
from stripe_support import CUSTOMER, fixture, link_user

from vibe.billing.keys import DISPATCHER

PRICE = "price_000000000000000000000000"
FLAKY_DIR = str(ROOT / "tests" / "plugins_flaky")


def unmapped_subscription(created: int = 1_700_000_100, **changes) -> dict:
    """The fixture's subscription (price PRICE, which STRIPE_PRICE_TIERS="" maps to no tier)."""
    return fixture("customer.subscription.created", created=created, **changes)


def priceless_subscription(created: int = 1_700_000_200) -> dict:
    """A subscription naming no price at all: a data problem, not configuration (retried)."""
    return fixture("customer.subscription.created", created=created, id="sub_priceless",
                   items={"object": "list", "data": []}, plan=None)


async def dispatcher_rounds(service, rounds: int = 5) -> None:
    """Give the dispatcher time for several polls, and make it look for due work besides."""
    for _ in range(rounds):
        service.app[DISPATCHER].wake()
        await service.app[DISPATCHER].process_due()
        await asyncio.sleep(0.1)


async def test_an_unknown_price_fails_once_and_is_not_retried(start_service, caplog):
    service = await start_service(STRIPE_PRICE_TIERS="", STRIPE_MAX_ATTEMPTS="2")
    await link_user(service)
    event = unmapped_subscription()
    with caplog.at_level(logging.WARNING, logger="vibe.billing.dispatcher"):
        await service.deliver(event)
        await dispatcher_rounds(service)  # with the old retries, 2 attempts would be dead by now
    row = await service.event_row(event["id"])
    assert row["status"] == "failed" and row["next_attempt_at"] is None and row["attempts"] == 0
    assert row["note"].startswith(f"needs configuration (STRIPE_PRICE_TIERS): no tier for price '{PRICE}'")
    assert f"STRIPE_PRICE_TIERS={PRICE}=TIER" in row["note"] and "metadata.tier" in row["note"]
    assert "ConfigurationNeeded" in row["last_error"]
    logged = [r for r in caplog.records if event["id"] in r.getMessage()]
    assert len(logged) == 1 and "STRIPE_PRICE_TIERS" in logged[0].getMessage()
    assert (await service.user("user-1"))["tier"] == "free"  # nothing guessed

    misspelt = unmapped_subscription(1_700_000_101, id="sub_misspelt")
    misspelt["data"]["object"]["items"]["data"][0]["price"]["metadata"] = {"tier": "premium"}
    await service.deliver(misspelt)
    row = await service.event_row(misspelt["id"])
    assert row["next_attempt_at"] is None and "metadata.tier 'premium' is not one of free, starter" in row["note"]


async def test_health_is_degraded_by_events_that_need_configuration(start_service):
    service = await start_service(STRIPE_PRICE_TIERS="")
    await link_user(service)
    await service.deliver(unmapped_subscription(id="sub_a"), unmapped_subscription(1_700_000_101, id="sub_b"))
    body = await (await service.client.get("/health")).json()
    assert body["status"] == "degraded"
    assert body["stripe_events"] == {"pending": 0, "failed": 2, "waiting": 0, "dead": 0}  # the same keys
    assert body["queues"]["stripe_pending"] == 0 and body["queues"]["stripe_dead"] == 0
    probe = body["functions"]["stripe-webhook"]
    assert probe["status"] == "degraded" and probe["needs_configuration"] == 2
    assert probe["error"].startswith(
        "2 events need configuration (STRIPE_PRICE_TIERS): python run.py events list --status failed")
    one = await (await service.client.get("/functions/v1/stripe-webhook/health")).json()
    assert one["status"] == "degraded" and "2 events need configuration" in one["error"]


async def test_replay_failed_applies_them_once_the_setting_is_fixed(start_service, env):
    service = await start_service(STRIPE_PRICE_TIERS="")
    await link_user(service)
    event = unmapped_subscription()
    await service.deliver(event)

    code, out, err = await run_cli("events", "replay", "--failed", "--json", env={**env, "STRIPE_PRICE_TIERS": ""})
    assert code == 1, err  # still not configured: says so, and stays out of the timer
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(event["id"], "failed")]
    row = await service.event_row(event["id"])
    assert row["next_attempt_at"] is None and row["note"].startswith("needs configuration (STRIPE_PRICE_TIERS): ")

    code, out, err = await run_cli("events", "replay", "--failed", "--json",
                                   env={**env, "STRIPE_PRICE_TIERS": f"{PRICE}=pro"})
    assert code == 0, err
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(event["id"], "processed")]
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("pro", "active")
    health = await (await service.client.get("/functions/v1/stripe-webhook/health")).json()
    assert health["status"] == "healthy" and health["needs_configuration"] == 0


async def test_a_transient_billing_error_still_backs_off_and_is_dead_lettered(start_service, caplog):
    service = await start_service(STRIPE_MAX_ATTEMPTS="3", STRIPE_RETRY_BASE_SECONDS="0.4")
    await link_user(service)
    event = priceless_subscription()
    with caplog.at_level(logging.WARNING, logger="vibe.billing.dispatcher"):
        before = time.time()
        assert (await service.post_event(event)).status == 200
        row = await service.wait_status(event["id"], "failed")
        # the first retry: full jitter over the upper half of STRIPE_RETRY_BASE_SECONDS
        assert row["attempts"] == 1 and before + 0.2 <= row["next_attempt_at"] <= time.time() + 0.4
        assert row["note"] is None and "BillingError: no tier" in row["last_error"]
        row = await service.wait_status(event["id"], "dead")
    assert row["attempts"] == 3 and row["next_attempt_at"] is None
    messages = [r.getMessage() for r in caplog.records if event["id"] in r.getMessage()]
    assert len(messages) == 3 and "dead after 3 attempts" in messages[-1]


async def test_events_list_says_why_events_were_ignored_waiting_or_failed(start_service, env):
    service = await start_service(STRIPE_PRICE_TIERS="", STRIPE_RETRY_BASE_SECONDS="600")
    ignored = fixture("customer.created", created=1_700_000_000)  # no user id, no email
    await service.deliver(ignored)
    await link_user(service)
    waiting = fixture("customer.subscription.created", created=1_700_000_050, id="sub_w", customer="cus_unlinked")
    configuration = unmapped_subscription()
    transient = priceless_subscription()
    await service.deliver(waiting, configuration, transient)
    processed = (await service.db.fetchone("SELECT id FROM stripe_events WHERE status = 'processed'"))["id"]

    code, out, err = await run_cli("events", "list", "--json", env=env)
    assert code == 0, err
    listed = {r["id"]: r for r in json.loads(out)}
    assert listed[ignored["id"]]["reason"] == "no user named in metadata.user_id and no profile with this email"
    assert listed[waiting["id"]]["reason"] == "waiting for Stripe customer cus_unlinked to be linked to a user"
    assert listed[configuration["id"]]["reason"] == listed[configuration["id"]]["note"]
    assert listed[configuration["id"]]["note"].startswith(f"needs configuration (STRIPE_PRICE_TIERS): no tier for price '{PRICE}'")
    assert listed[configuration["id"]]["next_attempt_at"] is None
    assert listed[transient["id"]]["reason"].startswith("vibe.billing.state.BillingError: no tier: the subscription")
    assert "(next try " in listed[transient["id"]]["reason"] and listed[transient["id"]]["next_attempt_at"]
    assert listed[processed]["reason"] is None and listed[processed]["note"].startswith("linked to user")

    code, out, err = await run_cli("events", "list", env=env)
    assert code == 0, err
    lines = out.splitlines()

    def reason_line(event_id: str) -> str | None:
        at = next(i for i, line in enumerate(lines) if line.endswith(event_id))
        after = lines[at + 1] if at + 1 < len(lines) else ""
        return after.strip() if after.startswith(" " * 40) else None

    assert reason_line(ignored["id"]) == "note: no user named in metadata.user_id and no profile with this email"
    assert reason_line(waiting["id"]) == "note: waiting for Stripe customer cus_unlinked to be linked to a user"
    shown = reason_line(configuration["id"])
    assert shown.startswith(f"note: needs configuration (STRIPE_PRICE_TIERS): no tier for price '{PRICE}'") and shown.endswith("...")
    assert len(shown) == len("note: ") + 120  # shortened for the table; `events show` has it all
    assert reason_line(transient["id"]).startswith("error: vibe.billing.state.BillingError: no tier")
    assert reason_line(processed) is None


@pytest.fixture
def flaky(tmp_path, monkeypatch, env):
    marker = tmp_path / "flaky-marker"
    monkeypatch.setenv("FLAKY_MARKER", str(marker))
    env.update(VIBE_PLUGINS_DIRS=FLAKY_DIR, STRIPE_EXTRA_EVENT_TYPES="")
    return marker


async def test_the_stripe_webhook_probe_counts_events_processed_not_attempts(start_service, flaky):
    flaky.write_text("2")  # two failed attempts (each runs the handler once: every event has a savepoint)
    service = await start_service()
    await link_user(service)
    await service.deliver(fixture("customer.created", created=1_700_000_001))  # ignored
    retried = make_event("customer.updated", {"id": CUSTOMER, "object": "customer"})
    assert (await service.post_event(retried)).status == 200
    await service.wait_status(retried["id"], "processed")

    body = await (await service.client.get("/functions/v1/stripe-webhook/health")).json()
    in_db = await service.db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE status = 'processed'")
    assert body["processed"] == in_db == 2
    assert body["attempts"] == 5 and body["failed_attempts"] == 2  # 1 + 1 + 3 runs, 2 of them failed
    assert {"function", "version", "status", "events", "processed", "queues", "latency_ms"} <= set(body)
