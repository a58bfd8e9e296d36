"""The real entry points: `python run.py serve` with no configuration, the example script, and
the operator commands against what it stored."""

import asyncio
import json
import sys

import pytest
from conftest import FIXTURES, ROOT, run_cli
from live_service import LiveService

pytestmark = pytest.mark.slow



@pytest.fixture
async def served(tmp_path, database_url):
    """`python run.py serve` with nothing configured but where to keep its data (and, on the
    PostgreSQL run, the database)."""
    env = {"VIBE_DATA_DIR": str(tmp_path / "var"), "STRIPE_PRICE_TIERS": "price_000000000000000000000000=pro"}
    if not database_url.startswith("sqlite"):
        env["DATABASE_URL"] = database_url
    service = await LiveService(env).start()
    yield {"port": service.port, "env": service.env, "banner": await service.banner()}
    await service.stop(timeout=30)


async def post_example(served, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "post_stripe_event.py"), *args,
        "--url", f"http://127.0.0.1:{served['port']}/functions/v1/stripe-webhook",
        env=served["env"], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_serve_with_no_configuration_takes_signed_events_from_the_example_script(served, tmp_path):
    secret = (tmp_path / "var" / "stripe_webhook_secret").read_text().strip()
    assert secret.startswith("whsec_") and secret in served["banner"]
    assert "stripe listen --forward-to" in served["banner"]

    customer = json.loads((FIXTURES / "events" / "customer.created.json").read_text())
    customer["data"]["object"]["metadata"] = {"user_id": "cli-user"}
    customer_file = tmp_path / "customer.json"
    customer_file.write_text(json.dumps(customer))
    code, out, err = await post_example(served, str(customer_file))
    assert code == 0, err
    assert out.startswith("200 ") and json.loads(out[4:])["duplicate"] is False
    code, out, _ = await post_example(served, str(customer_file))
    assert json.loads(out[4:])["duplicate"] is True

    subscription = FIXTURES / "events" / "customer.subscription.created.json"
    assert (await post_example(served, str(subscription), "--fresh"))[0] == 0
    assert (await post_example(served, str(subscription), "--fresh"))[0] == 0  # same object, newer event
    code, _, err = await post_example(served, str(subscription), "--secret", "whsec_wrong")
    assert code == 1 and "invalid_signature" in err

    env = served["env"]
    for _ in range(100):
        code, out, _ = await run_cli("events", "stats", "--json", env=env)
        stats = json.loads(out)
        if stats["by_status"].get("processed") == 3:
            break
        await asyncio.sleep(0.1)
    assert stats == {"by_status": {"processed": 3},
                     "by_type": {"customer.created": {"processed": 1},
                                 "customer.subscription.created": {"processed": 2}}}

    code, out, _ = await run_cli("events", "list", "--type", "customer.created", "--json", env=env)
    listed = json.loads(out)
    assert code == 0 and [e["id"] for e in listed] == [customer["id"]]
    code, out, _ = await run_cli("events", "show", customer["id"], "--json", env=env)
    shown = json.loads(out)
    assert shown["payload"]["data"]["object"]["metadata"] == {"user_id": "cli-user"}
    code, out, _ = await run_cli("events", "list", "--status", "failed", env=env)
    assert code == 0 and len(out.strip().splitlines()) == 1  # just the header

    code, out, err = await run_cli("users", "show", "cli-user", "--json", env=env)
    assert code == 0, err
    user = json.loads(out)
    assert (user["tier"], user["subscription_status"], user["stripe_customer_id"]) == ("pro", "active", "cus_00000000000000")
    assert user["payments"] == [] and user["disputes"] == [] and user["commissions"] == []
    code, _, err = await run_cli("users", "show", "nobody", env=env)
    assert code == 1 and "no user nobody" in err


async def test_stripe_sign_prints_the_header_stripe_would_send(env, tmp_path):
    payload = tmp_path / "event.json"
    payload.write_bytes(b'{"id": "evt_1"}')
    code, out, _ = await run_cli("stripe", "sign", str(payload), "--secret", "whsec_abc", "--timestamp", "1700000000",
                                 env=env)
    from vibe.billing.signature import sign

    assert code == 0 and out.strip() == sign(b'{"id": "evt_1"}', "whsec_abc", 1700000000)


async def test_a_malformed_setting_is_one_line_and_exit_2(env):
    code, out, err = await run_cli("migrate", env={**env, "MAX_DB_CONNECTIONS": "lots"})
    assert code == 2 and out == ""
    assert err.strip() == "configuration error: MAX_DB_CONNECTIONS: expected a whole number, got 'lots'"
    code, _, err = await run_cli("events", "list", env={**env, "DATABASE_URL": "mysql://x"})
    assert code == 2 and err.strip().startswith("configuration error: DATABASE_URL:")


async def test_migrate_is_idempotent_and_json_is_only_json(env):
    for _ in range(2):
        code, out, err = await run_cli("migrate", "--json", env=env)
        assert code == 0, err
        result = json.loads(out)
        assert all(m["applied"] for m in result["migrations"])
    assert result["applied"] == []


async def test_an_unreachable_database_is_one_line_and_exit_3(env):
    code, _, err = await run_cli("events", "list", env={
        **env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "DB_CONNECT_RETRIES": "0"})
    assert code == 3 and err.strip().startswith("database unavailable: postgresql: cannot connect")
