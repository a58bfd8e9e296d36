"""Issue 14: vibe in a schema of its own (DATABASE_SCHEMA), beside the platform's tables.

On PostgreSQL: a database that already holds the platform's tables (tests/platform_db.py, from
CONTRACT.md) and Supabase's `auth` schema; `migrate`, `serve`, the webhook journey and a user
journey work there, owned by a non-superuser, and leave the platform's tables, rows and rights as
they were. Two deployments in one database see nothing of each other. The row-security role is
vibe's own, granted only on vibe's schema, and one a DBA made is used without CREATEROLE.
"""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest
import tokens
from conftest import PG_URL, postgres_only, run_cli, signed
from live_service import LiveService, settle_stripe
from platform_db import Server, fingerprint, platform_sql
from stripe_support import CUSTOMER, fixture

from vibe.config import ConfigError, Settings
from vibe.db.database import create_database
from vibe.db.migrations import discover

PATH = "/functions/v1/user-management"
TIERS = "price_000000000000000000000000=pro"
GRANTED_ON = """SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                aclexplode(c.relacl) a WHERE a.grantee = %s::regrole
                UNION SELECT nspname FROM pg_namespace, aclexplode(nspacl) a WHERE a.grantee = %s::regrole"""


@pytest.fixture(scope="module")
def server():
    if not PG_URL.startswith(("postgresql://", "postgres://")):
        pytest.skip("PostgreSQL-only behaviour: set DATABASE_URL=postgresql://... to run it")
    made = Server(PG_URL)
    yield made
    made.close()


def platform(server: Server, owner: str, name: str = "vibe_platform") -> str:
    """A fresh database owned by `owner` holding the platform's tables (made by `owner`, as on
    Supabase, where the platform's tables belong to the same `postgres` role vibe logs in as)."""
    url = server.url_of(server.database(name, owner), owner)
    for statement in platform_sql():
        server.run(statement, url=url)
    return url


async def open_db(url: str, **env: str):
    db = create_database(Settings.from_env({"DATABASE_URL": url, **env}))
    await db.open()
    return db


async def call(client, base: str, action: str, data: dict, token: str) -> tuple[int, dict]:
    async with client.post(f"{base}{PATH}", json={"action": action, "data": data}, headers=tokens.auth(token)) as r:
        return r.status, await r.json()


async def test_beside_the_platform_migrate_serve_and_both_journeys_leave_its_tables_unchanged(server, tmp_path):
    owner = server.role("vibe_owner", "LOGIN CREATEROLE")  # Supabase's postgres: no superuser
    url = platform(server, owner)
    rls = f"vibe_rls_{server.suffix}"
    server.forget_role_later(rls)
    before = fingerprint(url)
    env = {"DATABASE_URL": url, "DATABASE_RLS_ROLE": rls, "VIBE_DATA_DIR": str(tmp_path / "var")}

    code, out, err = await run_cli("migrate", env=env)  # DATABASE_SCHEMA unset: `vibe`
    assert code == 0, err
    assert f"{len(discover())} migrations recorded; the database is up to date" in out
    assert server.run("SELECT count(*) FROM vibe.schema_migrations", url=url) == [(len(discover()),)]
    assert fingerprint(url) == before

    service = await LiveService.on(url, str(tmp_path / "var"), DATABASE_RLS_ROLE=rls, STRIPE_PRICE_TIERS=TIERS,
                                   SUPABASE_JWT_SECRET=tokens.JWT_SECRET).start()
    learner, newcomer = str(uuid.uuid4()), str(uuid.uuid4())
    db = await open_db(url, DATABASE_RLS_ROLE=rls)
    try:
        async with aiohttp.ClientSession() as client:
            for event in (fixture("customer.created", 1_700_000_000, email="l@example.com",
                                  metadata={"user_id": learner}),
                          fixture("customer.subscription.created", 1_700_000_100),
                          fixture("invoice.payment_succeeded", 1_700_000_200)):
                body, headers = signed(event)
                async with client.post(f"{service.url}/functions/v1/stripe-webhook", data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
            await settle_stripe(db)
            status, body = await call(client, service.url, "create_profile", {}, tokens.user_token(newcomer))
            assert status == 200, body
            items = [{"resource_type": "workshop", "resource_id": "1", "status": "completed", "progress": 100}]
            status, body = await call(client, service.url, "sync_progress", {"items": items},
                                      tokens.user_token(learner))
            assert status == 200 and body["changed"] == 1, body
            status, body = await call(client, service.url, "get_profile", {}, tokens.user_token(learner))
            assert status == 200, body
            assert body["profile"]["tier"] == "pro" and [a["key"] for a in body["achievements"]] == ["first_workshop"]
            assert [(p["resource_id"], p["status"]) for p in body["progress"]] == [("1", "completed")]
        assert {r["id"]: r["tier"] for r in await db.fetchall("SELECT id, tier FROM profiles")} == {
            learner: "pro", newcomer: "free"}
        assert await db.fetchval("SELECT count(*) FROM stripe_customers WHERE customer_id = %s", (CUSTOMER,)) == 1
        assert await db.fetchval("SELECT count(*) FROM payments") == 1
        assert await db.fetchval("SELECT current_schema()") == "vibe"
    finally:
        await db.close()
        code, err = await service.stop()
    assert code == 0, err
    assert fingerprint(url) == before  # not a row, column, right or policy of the platform's changed
    where = server.run("SELECT DISTINCT schemaname FROM pg_tables WHERE tableowner = %s", (owner,), url=url)
    assert sorted(r[0] for r in where) == ["auth", "public", "vibe"]
    assert server.run("SELECT to_regclass('public.schema_migrations'), to_regclass('public.stripe_events')",
                      url=url) == [(None, None)]
    assert {r[0] for r in server.run(GRANTED_ON, (rls, rls), url=url)} == {"vibe"}  # granted on vibe's schema only
    assert server.run("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (owner,)) == [(False, True)]


async def test_two_deployments_in_one_database_see_nothing_of_each_other(server, start_service):
    owner = server.role("vibe_pair", "LOGIN CREATEROLE")
    url = platform(server, owner, "vibe_pair")
    before = fingerprint(url)
    first, second = f"vibe_a_{server.suffix}", f"vibe_b_{server.suffix}"
    for schema in (first, second):
        server.forget_role_later(f"{schema}_user")  # each its own derived row-security role
    a = await start_service(DATABASE_URL=url, DATABASE_SCHEMA=first)
    b = await start_service(DATABASE_URL=url, DATABASE_SCHEMA=second)
    assert (a.settings.db.rls_role, b.settings.db.rls_role) == (f"{first}_user", f"{second}_user")

    await a.deliver(fixture("customer.created", 1_700_000_000, email="a@example.com", metadata={"user_id": "a-user"}))
    resp = await b.client.post(PATH, json={"action": "create_profile"}, headers=tokens.auth(tokens.user_token("b-user")))
    assert resp.status == 200, await resp.text()
    items = {"items": [{"resource_type": "workshop", "resource_id": "1", "status": "completed"}]}
    resp = await b.client.post(PATH, json={"action": "sync_progress", "data": items},
                               headers=tokens.auth(tokens.user_token("b-user")))
    assert resp.status == 200, await resp.text()

    assert (await a.user("a-user"))["stripe_customer_id"] == CUSTOMER and await b.user("a-user") is None
    assert await a.user("b-user") is None and (await b.user("b-user"))["tier"] == "free"
    assert await a.db.fetchval("SELECT count(*) FROM stripe_events") == 1
    assert await b.db.fetchval("SELECT count(*) FROM stripe_events") == 0
    assert await a.db.fetchval("SELECT count(*) FROM user_progress") == 0
    assert await b.db.fetchval("SELECT count(*) FROM user_progress") == 1
    resp = await a.client.post(PATH, json={"action": "get_profile", "data": {"user_id": "b-user"}},
                               headers=tokens.auth(tokens.admin_token()))
    assert resp.status == 404
    for schema in (first, second):
        role = f"{schema}_user"
        assert {r[0] for r in server.run(GRANTED_ON, (role, role), url=url)} == {schema}
    assert fingerprint(url) == before


async def test_an_owner_without_createrole_is_told_what_to_ask_for_then_uses_the_role_a_dba_made(
        server, start_service, tmp_path):
    owner = server.role("vibe_plain", "LOGIN")  # neither superuser nor CREATEROLE
    url = platform(server, owner, "vibe_plain")
    before = fingerprint(url)
    rls = f"vibe_dba_rls_{server.suffix}"
    env = {"DATABASE_URL": url, "DATABASE_RLS_ROLE": rls, "VIBE_DATA_DIR": str(tmp_path / "var")}

    code, _, err = await run_cli("migrate", env=env)
    assert code != 0 and f"CREATE ROLE {rls} NOLOGIN; GRANT {rls} TO {owner}" in err, err
    # what came before the role's migration stays applied, the role's migration is not half-done
    assert server.run("SELECT max(version) FROM vibe.schema_migrations", url=url) == [(10,)]

    server.role("vibe_dba_rls")  # the DBA's two statements
    server.run(f"GRANT {rls} TO {owner}")
    code, out, err = await run_cli("migrate", env=env)
    assert code == 0 and "up to date" in out, err
    assert server.run("SELECT max(version) FROM vibe.schema_migrations", url=url) == [(discover()[-1].version,)]
    service = await start_service(DATABASE_URL=url, DATABASE_RLS_ROLE=rls)
    token = tokens.user_token("plain-user")
    for action, data in (("create_profile", {}), ("sync_progress", {"items": [
            {"resource_type": "commandment", "resource_id": "3", "status": "completed"}]})):
        resp = await service.client.post(PATH, json={"action": action, "data": data}, headers=tokens.auth(token))
        assert resp.status == 200, await resp.text()
    resp = await service.client.post(PATH, json={"action": "get_profile", "data": {}}, headers=tokens.auth(token))
    body = await resp.json()
    assert resp.status == 200 and [p["resource_id"] for p in body["progress"]] == ["3"], body
    assert {r[0] for r in server.run(GRANTED_ON, (rls, rls), url=url)} == {"vibe"}
    assert fingerprint(url) == before


async def test_tables_of_an_earlier_vibe_in_public_are_not_hidden_behind_a_new_empty_schema(server, tmp_path):
    url = server.url_of(server.database("vibe_legacy", "postgres"))
    rls = f"vibe_legacy_rls_{server.suffix}"
    server.forget_role_later(rls)
    env = {"DATABASE_URL": url, "DATABASE_RLS_ROLE": rls, "VIBE_DATA_DIR": str(tmp_path / "var")}
    code, _, err = await run_cli("migrate", env={**env, "DATABASE_SCHEMA": "public"})  # as before the setting
    assert code == 0, err
    code, _, err = await run_cli("migrate", env=env)
    assert code == 2 and "DATABASE_SCHEMA=public" in err, err
    assert server.run("SELECT to_regnamespace('vibe')", url=url) == [(None,)]
    code, out, err = await run_cli("migrate", env={**env, "DATABASE_SCHEMA": "public"})
    assert code == 0 and "up to date" in out, err
    assert server.run("SELECT to_regnamespace('vibe')", url=url) == [(None,)]


@postgres_only
async def test_the_test_harness_gives_each_test_its_schema_and_role(service):
    schema = service.settings.db.schema
    assert schema.startswith("t_") and service.settings.db.rls_role == f"{schema}_user"
    assert await service.db.fetchval("SELECT current_schema()") == schema
    assert await service.db.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = %s", (f"{schema}_user",)) == 1


def test_the_schema_and_role_settings_are_plain_identifiers_derived_when_unset():
    def db(**env):
        return Settings.from_env(env).db

    assert (db().schema, db().rls_role) == ("vibe", "vibe_user")
    assert (db(DATABASE_SCHEMA="public").schema, db(DATABASE_SCHEMA="public").rls_role) == ("public", "vibe_user")
    assert db(DATABASE_SCHEMA="learn").rls_role == "learn_user"
    assert db(DATABASE_SCHEMA="learn", DATABASE_RLS_ROLE="learn_rls").rls_role == "learn_rls"
    assert db(DATABASE_URL="postgresql://h/d?options=-csearch_path%3Dt_1").schema == "t_1"
    assert db(DATABASE_URL="postgresql://h/d?options=-c%20search_path%3Dother,public").schema == "other"
    for bad in ("Vibe", "1st", "a-b", "pg_toast", "information_schema", "x" * 64, 'a"b'):
        with pytest.raises(ConfigError, match="DATABASE_SCHEMA"):
            db(DATABASE_SCHEMA=bad)
    for bad in ("public", "pg_monitor", "Role"):
        with pytest.raises(ConfigError, match="DATABASE_RLS_ROLE"):
            db(DATABASE_RLS_ROLE=bad)
    with pytest.raises(ConfigError, match="DATABASE_RLS_ROLE"):
        db(DATABASE_SCHEMA="s" * 60)  # `<schema>_user` would be longer than PostgreSQL allows


async def test_check_config_warns_about_a_pooler_port_with_prepared_statements(tmp_path):
    pooled = "postgresql://postgres.abc:pw@aws-0-eu.pooler.supabase.com:6543/postgres"
    base = {"VIBE_DATA_DIR": str(tmp_path)}
    for extra, expected in (({}, "warning"), ({"DB_PREPARE_THRESHOLD": "0"}, "set")):
        code, out, err = await run_cli("check-config", "--json", env={**base, "DATABASE_URL": pooled, **extra})
        row = next(v for v in json.loads(out)["variables"] if v["name"] == "DATABASE_URL")
        assert code == 0 and row["state"] == expected, (out, err)  # a warning is not an error
    assert "DB_PREPARE_THRESHOLD=0" in next(
        v for v in json.loads((await run_cli("check-config", "--json", env={**base, "DATABASE_URL": pooled}))[1])[
            "variables"] if v["name"] == "DATABASE_URL")["note"]
    direct = "postgresql://postgres:pw@db.abc.supabase.co:5432/postgres"
    code, out, _ = await run_cli("check-config", "--json", env={**base, "DATABASE_URL": direct})
    assert next(v for v in json.loads(out)["variables"] if v["name"] == "DATABASE_URL")["state"] == "set"


async def test_sqlite_ignores_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    code, out, err = await run_cli("migrate", env={"DATABASE_URL": url, "DATABASE_SCHEMA": "elsewhere",
                                                   "VIBE_DATA_DIR": str(tmp_path)})
    assert code == 0 and "up to date" in out, err
    db = await open_db(url)
    try:
        assert await db.fetchval("SELECT count(*) FROM profiles") == 0
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())
    finally:
        await db.close()
