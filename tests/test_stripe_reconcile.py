"""Reconcile (issue 16): Stripe's customers and subscriptions against vibe's state, through the
CLI against the emulator: a clean state reports nothing; drift (a row edited by hand, an event
never delivered, a customer never linked) is shown, exits 1, and `--fix` repairs it through the
handlers (source `reconcile`) with an audit row."""

import json

from conftest import run_cli
from stripe_support import USER, learner_in_stripe

QUIET = {"STRIPE_CATCHUP_SECONDS": "0"}


async def synced(start_service, stripe_emulator, env):
    """A learner paying for pro in Stripe, and vibe knowing all of it (through catch-up)."""
    customer, sub = await learner_in_stripe(stripe_emulator)
    cli_env = {**env, **stripe_emulator.env}
    code, _, err = await run_cli("stripe", "catch-up", env=cli_env)
    assert code == 0, err
    service = await start_service(**stripe_emulator.env, **QUIET)
    assert (await service.user(USER))["tier"] == "pro"
    return service, customer, sub, cli_env


async def test_a_clean_state_reports_nothing(start_service, stripe_emulator, env):
    service, customer, sub, cli_env = await synced(start_service, stripe_emulator, env)
    code, out, err = await run_cli("stripe", "reconcile", env=cli_env)
    assert (code, out.strip()) == (0, "checked 1 customers and 1 subscriptions in Stripe: no drift"), err
    code, out, _ = await run_cli("stripe", "reconcile", "--json", env=cli_env)
    assert code == 0 and json.loads(out)["drift"] == []


async def test_drift_is_shown_and_fixed_through_the_handlers(start_service, stripe_emulator, env):
    service, customer, sub, cli_env = await synced(start_service, stripe_emulator, env)
    # A row edited by hand, and an event never delivered (no webhook endpoint is registered).
    await service.db.execute("UPDATE profiles SET tier = 'free', subscription_status = 'canceled' WHERE id = %s",
                             (USER,))
    await stripe_emulator.api("POST", f"/v1/subscriptions/{sub['id']}", cancel_at_period_end=True)
    code, out, _ = await run_cli("stripe", "reconcile", env=cli_env)
    assert code == 1 and "4 difference(s)" in out.splitlines()[0]
    assert any(line.split()[:2] == ["profile", sub["id"]] and "tier" in line and line.split()[-2:] == ["free", "pro"]
               for line in out.splitlines())
    code, out, _ = await run_cli("stripe", "reconcile", "--json", env=cli_env)
    drift = {(d["kind"], d["field"]): (d["vibe"], d["stripe"]) for d in json.loads(out)["drift"]}
    assert drift == {("profile", "tier"): ("free", "pro"), ("profile", "status"): ("canceled", "active"),
                     ("profile", "cancel_at_period_end"): (False, True),
                     ("subscription", "cancel_at_period_end"): (False, True)}

    code, out, err = await run_cli("stripe", "reconcile", "--fix", "--json", env=cli_env)
    result = json.loads(out)
    assert code == 0, err
    assert [(e["type"], e["status"]) for e in result["fixed"]] == [("customer.subscription.updated", "processed")]
    assert result["remaining"] == []
    user = await service.user(USER)
    assert (user["tier"], user["subscription_status"], user["cancel_at_period_end"]) == ("pro", "active", True)
    audit = await service.db.fetchall("SELECT actor, old_tier, new_tier, old_status, new_status, reason "
                                      "FROM subscription_audit WHERE user_id = %s", (USER,))
    assert [(a["actor"], a["old_tier"], a["new_tier"], a["new_status"]) for a in audit] == \
        [("reconcile", "free", "pro", "active")] and "differed from Stripe" in audit[0]["reason"]
    code, out, _ = await run_cli("events", "list", "--json", env=cli_env)
    assert [r["source"] for r in json.loads(out) if r["id"] == result["fixed"][0]["id"]] == ["reconcile"]
    code, out, _ = await run_cli("stripe", "reconcile", env=cli_env)
    assert code == 0 and "no drift" in out


async def test_a_customer_never_linked_is_linked(start_service, stripe_emulator, env):
    service = await start_service(**stripe_emulator.env, **QUIET)
    customer = await stripe_emulator.customer("mia@example.com", "a3bb189e-8bf9-3888-9912-ace4e6543002", card=False)
    cli_env = {**env, **stripe_emulator.env}
    code, out, _ = await run_cli("stripe", "reconcile", env=cli_env)
    assert code == 1 and f"customer      {customer['id']}" in out
    code, out, err = await run_cli("stripe", "reconcile", "--fix", env=cli_env)
    assert code == 0 and "fixed: customer.created" in out and "no drift left" in out, out + err
    assert await service.db.fetchval("SELECT user_id FROM stripe_customers WHERE customer_id = %s",
                                     (customer["id"],)) == "a3bb189e-8bf9-3888-9912-ace4e6543002"
