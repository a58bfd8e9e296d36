"""The monitoring commands against a running service, healthy then degraded; check-config."""

import json

import pytest
from conftest import run_cli
from live_service import LiveService, open_db
from ops_support import GOOD_PRODUCTION

pytestmark = pytest.mark.slow


@pytest.fixture
async def live(database_url, tmp_path):
    service = await LiveService.on(database_url, str(tmp_path / "var")).start()
    yield service
    await service.stop()


async def make_dead_letter(database_url: str) -> None:
    db = await open_db(database_url)
    try:
        await db.execute("INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, status, "
                         "attempts) VALUES ('evt_cli_dead', 'x.y', 1, FALSE, '{}', 1, 'dead', 8)")
    finally:
        await db.close()


async def test_commands_against_a_healthy_then_degraded_service(live, database_url, tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path / "cli")}
    url = ("--url", live.url)
    code, out, err = await run_cli("dashboard", *url, env=env)
    assert code == 0, err
    assert "stripe-webhook" in out and "user-management" in out and "System: healthy" in out and "200" in out
    code, out, _ = await run_cli("dashboard", *url, "--json", env=env)
    view = json.loads(out)
    assert code == 0 and view["status"] == "healthy" and {r["http"] for r in view["functions"]} == {200}
    code, out, _ = await run_cli("check", "all", *url, env=env)
    assert code == 0 and "system" in out and "healthy" in out
    code, out, _ = await run_cli("test", "stripe-webhook", "12", *url, env=env)
    assert code == 0 and "12/12" in out and "p95" in out
    code, out, _ = await run_cli("monitor", *url, "--count", "2", "--interval", "0.1", env=env)
    assert code == 0 and out.count("System: healthy") == 2
    report = tmp_path / "report.md"
    code, out, _ = await run_cli("report", *url, "--output", str(report), env=env)
    assert code == 0 and "report written" in out
    text = report.read_text()
    assert "| stripe-webhook | healthy |" in text and "## Slowest routes" in text and "/health" in text

    await make_dead_letter(database_url)
    code, out, _ = await run_cli("dashboard", *url, env=env)
    assert code == 1 and "System: degraded" in out and "stripe_dead 1" in out
    code, out, _ = await run_cli("check", "stripe-webhook", *url, env=env)
    assert code == 1 and "degraded" in out
    code, _, _ = await run_cli("check", "user-management", *url, env=env)
    assert code == 0
    code, out, _ = await run_cli("report", *url, "--format", "json", "--output", str(tmp_path / "r.json"), env=env)
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and data["status"] == "degraded" and data["queues"]["stripe_dead"] == 1
    assert data["functions"]["system"]["requests"] > 0 and data["slowest_routes"]


async def test_commands_against_nothing_exit_2(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path / "cli")}
    code, out, _ = await run_cli("dashboard", "--url", "http://127.0.0.1:9", env=env)
    assert code == 2 and "unreachable" in out
    code, _, _ = await run_cli("test", "stripe-webhook", "3", "--url", "http://127.0.0.1:9", env=env)
    assert code == 2


async def test_check_config_on_good_and_bad_environments(tmp_path):
    base = {"VIBE_DATA_DIR": str(tmp_path / "var")}
    code, out, _ = await run_cli("check-config", "--json", env={**base, **GOOD_PRODUCTION})
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["environment"] == "production"
    shown = {v["name"]: v["value"] for v in report["variables"]}
    assert shown["STRIPE_SECRET_KEY"] == "sk_live_… (32 characters)"  # the kind and length only
    assert shown["STRIPE_WEBHOOK_SECRET"] == "whsec_… (30 characters)"
    assert shown["SUPABASE_SERVICE_ROLE_KEY"] == "… (13 characters)"
    assert shown["DATABASE_URL"] == "postgresql://…@db.internal/vibe"
    bad = {**GOOD_PRODUCTION, "STRIPE_SECRET_KEY": "sk_test_" + "a1" * 12, "STRIPE_WEBHOOK_SECRET": "whsec_x",
           "SUPABASE_URL": "http://abc.supabase.co", "ALERT_WEBHOOK": "hooks.example.com"}
    del bad["ADMIN_EMAIL"]
    code, out, _ = await run_cli("check-config", "--json", env={**base, **bad})
    states = {v["name"]: v["state"] for v in json.loads(out)["variables"]}
    assert code == 1
    assert states["STRIPE_SECRET_KEY"] == "wrong" and states["STRIPE_WEBHOOK_SECRET"] == "wrong"
    assert states["SUPABASE_URL"] == "wrong" and states["ALERT_WEBHOOK"] == "wrong" and states["ADMIN_EMAIL"] == "missing"
    code, out, _ = await run_cli("check-config", env={**base, **bad})
    assert code == 1 and "STRIPE_SECRET_KEY" in out and "error(s)" in out
    code, out, _ = await run_cli("check-config", env={**base, "STRIPE_SECRET_KEY": "sk_test_" + "c" * 20})
    assert code == 0 and "configuration OK" in out


async def test_check_config_shows_not_one_character_of_a_secret(tmp_path):
    jwt_secret = "super-secret-jwt-token-with-at-least-32-characters"
    code, out, _ = await run_cli("check-config", "--json", env={
        "VIBE_DATA_DIR": str(tmp_path / "var"), "SUPABASE_JWT_SECRET": jwt_secret,
        "DASHBOARD_PASSWORD": "dashboard-password-1", "EMAIL_SERVICE_KEY": "re_abcdefghijklmnop"})
    assert code == 0
    shown = {v["name"]: v["value"] for v in json.loads(out)["variables"]}
    assert shown["SUPABASE_JWT_SECRET"] == f"… ({len(jwt_secret)} characters)"
    assert shown["DASHBOARD_PASSWORD"] == "… (20 characters)"
    assert shown["EMAIL_SERVICE_KEY"] == "re_… (19 characters)"
    assert "secret-jwt" not in out and "dashboard-pass" not in out and "abcdefgh" not in out


async def test_serve_refuses_production_with_an_invalid_configuration(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path / "var"), **GOOD_PRODUCTION, "STRIPE_SECRET_KEY": "sk_test_" + "a1" * 12}
    code, _, err = await run_cli("serve", "--port", "9", env=env)
    assert code == 2 and "refusing to start" in err and "STRIPE_SECRET_KEY" in err
