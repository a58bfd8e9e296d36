"""Catch-up (issue 16): the events Stripe has that vibe lacks, listed from the emulator's Events
API and applied once, by `stripe catch-up` and by the service on its own."""

import json
import time

from conftest import SECRET, run_cli, wait_until
from stripe_support import USER, learner_in_stripe

from vibe.billing.catchup import catch_up
from vibe.billing.keys import CATCHUP, STRIPE_API, STRIPE_HANDLERS
from vibe.web.times import to_seconds

QUIET = {"STRIPE_CATCHUP_SECONDS": "0"}  # no background pass: the test runs the command itself


async def test_without_a_key_catch_up_says_it_is_off(env):
    code, out, err = await run_cli("stripe", "catch-up", env=env)
    assert (code, out) == (1, "") and "STRIPE_SECRET_KEY is not set: catch-up, reconcile" in err


async def test_catch_up_applies_what_no_webhook_delivered_once(start_service, stripe_emulator, env):
    customer, sub = await learner_in_stripe(stripe_emulator)  # no webhook endpoint registered
    cli_env = {**env, **stripe_emulator.env}
    code, out, err = await run_cli("stripe", "catch-up", "--json", env=cli_env)
    assert code == 0, err
    first = json.loads(out)
    # customer.created, customer.subscription.created, invoice.payment_succeeded, payment_intent.succeeded...
    assert first["listed"] == first["new"] >= 3 and first["had"] == 0 and first["cursor_saved"]
    service = await start_service(**stripe_emulator.env, **QUIET)
    user = await service.user(USER)
    assert (user["tier"], user["subscription_status"], user["stripe_subscription_id"]) == ("pro", "active", sub["id"])
    code, out, _ = await run_cli("events", "list", "--json", env=cli_env)
    rows = json.loads(out)
    assert {r["source"] for r in rows} == {"api"} and len(rows) == first["new"]
    code, out, _ = await run_cli("events", "show", rows[0]["id"], env=cli_env)
    assert "source       api" in out

    # A second run stores nothing new; the webhook copies arriving late are duplicates.
    code, out, _ = await run_cli("stripe", "catch-up", "--since", "1h", env=cli_env)
    assert code == 0 and out.strip() == f"listed {first['listed']}, new 0, already had {first['listed']}"
    listed = await stripe_emulator.api("GET", "/v1/events", limit=100)
    stored = {r["id"] for r in rows}
    for event in (e for e in listed["data"] if e["id"] in stored):
        answer = await (await service.post_event(event)).json()
        assert answer["duplicate"] is True
    assert await service.db.fetchval("SELECT COUNT(*) FROM payments WHERE user_id = %s", (USER,)) == 1


async def test_webhooks_and_catch_up_together_apply_each_event_once(start_service, stripe_emulator):
    service = await start_service(**stripe_emulator.env, **QUIET)
    await stripe_emulator.webhook_to(str(service.client.make_url("/functions/v1/stripe-webhook")), SECRET)
    await learner_in_stripe(stripe_emulator)
    result = await catch_up(service.app[STRIPE_API], service.db, service.settings, service.app[STRIPE_HANDLERS])
    await service.settle()

    async def delivered():  # localstripe sends its webhooks a second after the change
        n = await service.db.fetchval("SELECT COUNT(*) FROM stripe_events WHERE source = 'webhook'")
        return n + result.new >= result.listed
    await wait_until(delivered)
    await service.settle()
    rows = await service.db.fetchall("SELECT id, source, status FROM stripe_events")
    assert len(rows) == result.listed and all(r["status"] in ("processed", "ignored") for r in rows)
    assert (await service.user(USER))["tier"] == "pro"
    assert await service.db.fetchval("SELECT COUNT(*) FROM payments WHERE user_id = %s", (USER,)) == 1


async def test_the_service_catches_up_at_start_up_and_remembers_how_far(start_service, stripe_emulator):
    await learner_in_stripe(stripe_emulator)
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="3600")

    async def pro():
        user = await service.user(USER)
        return user is not None and user["tier"] == "pro"
    await wait_until(pro)
    health = await (await service.client.get("/functions/v1/stripe-webhook/health")).json()
    catchup = health["stripe_api"]["catchup"]
    assert health["stripe_api"]["enabled"] and catchup["passes"] == 1 and catchup["last"].startswith("listed ")
    newest = await service.db.fetchval("SELECT value FROM stripe_sync_state WHERE name = 'catchup'")
    assert int(newest) >= int(time.time()) - 60

    # The next pass starts a little before the newest event it saw: after a quiet time, one request.
    before = len(await stripe_emulator.requests("/v1/events"))
    result = await service.app[CATCHUP].pass_once()
    calls = (await stripe_emulator.requests("/v1/events"))[before:]
    assert result.new == 0 and len(calls) == 1 == result.requests
    assert int(calls[0]["params"]["created"]["gte"]) == int(newest) - 300
    assert sorted(calls[0]["params"]["types"]) == sorted(service.app[STRIPE_HANDLERS])


async def test_429_and_an_unreachable_stripe_are_waited_out(start_service, stripe_emulator, env):
    await stripe_emulator.fail_next("/v1/events", 429, "rate_limit_error", "Too many requests", retry_after=7)
    code, _, err = await run_cli("stripe", "catch-up", env={**env, **stripe_emulator.env})
    assert code == 1 and "429" in err and "retry in 7 s" in err
    code, _, err = await run_cli("stripe", "catch-up", env={**env, **stripe_emulator.env, "STRIPE_NETWORK_RETRIES": "0",
                                                           "STRIPE_API_BASE": "http://127.0.0.1:9"})
    assert code == 1 and "Stripe is unreachable at http://127.0.0.1:9" in err and "Traceback" not in err

    await stripe_emulator.fail_next("/v1/events", 429, "rate_limit_error", "Too many requests", retry_after=40)
    service = await start_service(**stripe_emulator.env, STRIPE_CATCHUP_SECONDS="3600")
    async def failed():
        return service.app[CATCHUP].last_error is not None
    await wait_until(failed)
    state = (await (await service.client.get("/functions/v1/stripe-webhook/health")).json())["stripe_api"]["catchup"]
    assert "429" in state["last_error"] and 30 < to_seconds(state["next_at"]) - time.time() <= 40
