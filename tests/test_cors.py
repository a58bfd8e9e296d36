"""CORS through HTTP (vibe/web/cors.py): preflights for every function, answered before the rate
limiter, authentication and the database; Allow-Origin on every answer to an allowed origin,
errors and 429s included; other origins refused; production's default; check-config's warning."""

import json

import pytest
import tokens
from conftest import run_cli
from databases import count_request_queries
from ops_support import GOOD_PRODUCTION, TroublePlugin

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
USERS = "/functions/v1/user-management"
CHECK = {"action": "check_access", "data": {"resource_type": "commandment", "resource_id": "1"}}
FUNCTION_ROUTES = ["/functions/v1/analytics-tracking/event", "/functions/v1/analytics-tracking/journey/u-1",
                   USERS, "/functions/v1/email-notifications", "/functions/v1/stripe-webhook"]
SUPABASE_HEADERS = ("authorization", "x-client-info", "apikey", "content-type", "x-write-key")
EXPOSED = ("X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def preflight(origin: str = APP, method: str = "POST") -> dict[str, str]:
    """What a browser sends before a supabase-js `functions.invoke`."""
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type"}


def names(header: str | None) -> set[str]:
    return {part.strip().lower() for part in (header or "").split(",") if part.strip()}


def assert_readable(resp, origin: str = APP) -> None:
    """The answer may be read by a page on `origin`, with the headers a front end needs."""
    assert resp.headers.get("Access-Control-Allow-Origin") == origin, (resp.status, dict(resp.headers))
    assert "origin" in names(resp.headers.get("Vary"))
    assert names(resp.headers.get("Access-Control-Expose-Headers")) >= {h.lower() for h in EXPOSED}
    assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize("path", [*FUNCTION_ROUTES, "/health", "/functions/v1/stripe-webhook/health",
                                  "/openapi.json", "/v1/batch"])
async def test_every_route_answers_a_preflight(start_service, path):
    service = await start_service(CORS_ALLOWED_ORIGINS=APP)
    resp = await service.client.options(path, headers=preflight())
    assert resp.status == 204, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == APP and "origin" in names(resp.headers["Vary"])
    assert names(resp.headers["Access-Control-Allow-Methods"]) >= {"get", "post", "delete", "options"}
    assert names(resp.headers["Access-Control-Allow-Headers"]) >= set(SUPABASE_HEADERS)
    assert int(resp.headers["Access-Control-Max-Age"]) > 0 and resp.headers["X-Request-ID"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_the_monitor_probe_of_the_webhook_is_answered_with_any_origin_by_default(service):
    # The platform's monitor script: OPTIONS /functions/v1/stripe-webhook (development: any origin).
    resp = await service.client.options("/functions/v1/stripe-webhook", headers=preflight("http://localhost:3000"))
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_a_preflight_takes_no_rate_limit_token_and_asks_no_database(start_service):
    service = await start_service(RATE_LIMIT_ANONYMOUS="2", CORS_ALLOWED_ORIGINS=APP)
    calls = count_request_queries(service.db)
    for _ in range(3):  # more than the anonymous limit
        for path in FUNCTION_ROUTES:
            resp = await service.client.options(path, headers=preflight())
            assert resp.status == 204
            assert "X-RateLimit-Limit" not in resp.headers  # the rate limiter never saw it
    assert calls == []
    first = await service.client.get("/openapi.json", headers={"Origin": APP})
    assert first.status == 200 and first.headers["X-RateLimit-Remaining"] == "1"  # the bucket was full
    resp = await service.client.post(USERS, json=CHECK, headers={"Origin": APP, **tokens.auth(tokens.user_token())})
    assert resp.status == 200 and calls  # the request itself does reach the database
    assert_readable(resp)


async def test_every_answer_to_an_allowed_origin_is_readable_errors_and_429_included(start_service):
    service = await start_service(extra_plugins=(TroublePlugin(),), RATE_LIMIT_ANONYMOUS="6",
                                  CORS_ALLOWED_ORIGINS=f"{APP}, http://localhost:3000/")
    origin = {"Origin": APP}
    answers = [
        (200, await service.client.get("/openapi.json", headers=origin)),
        (401, await service.client.post(USERS, json=CHECK, headers=origin)),
        (400, await service.client.post(USERS, json={"action": "nope"}, headers=origin)),
        (404, await service.client.get("/nowhere", headers=origin)),
        (405, await service.client.get(USERS, headers=origin)),
        (500, await service.client.get("/test/boom", headers=origin)),
    ]
    while (resp := await service.client.get("/openapi.json", headers=origin)).status != 429:
        assert resp.status == 200
    answers.append((429, resp))
    for status, resp in answers:
        assert resp.status == status, await resp.text()
        assert_readable(resp)
        if status >= 400:
            body = await resp.json()
            assert body["message"] == body["error"]["message"] and body["error"]["code"]
    assert answers[-1][1].headers["Retry-After"]
    # the second origin, written with a trailing slash in the setting, is the browser's origin
    resp = await service.client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert_readable(resp, "http://localhost:3000")


async def test_another_origin_is_refused_and_its_simple_requests_are_not_readable(start_service):
    service = await start_service(CORS_ALLOWED_ORIGINS=APP)
    resp = await service.client.options(USERS, headers=preflight(EVIL))
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "origin_not_allowed" and EVIL in body["message"]
    assert "Access-Control-Allow-Origin" not in resp.headers and "origin" in names(resp.headers["Vary"])
    assert body["error"]["request_id"] == resp.headers["X-Request-ID"]
    resp = await service.client.get("/openapi.json", headers={"Origin": EVIL})
    assert resp.status == 200  # served, but the browser keeps it from the page
    assert "Access-Control-Allow-Origin" not in resp.headers and "Access-Control-Expose-Headers" not in resp.headers
    resp = await service.client.get("/openapi.json", headers={"Origin": APP + ".evil.example.net"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_preflight_for_a_path_nobody_serves_is_404(service):
    resp = await service.client.options("/functions/v1/nothing-here", headers=preflight())
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_requests_without_an_origin_are_unchanged(service):
    from conftest import load_event

    resp = await service.post_event(load_event("customer.created"))
    assert resp.status == 200
    resp2 = await service.client.get("/health")
    resp3 = await service.client.options(USERS)  # an OPTIONS that is no preflight
    for r in (resp, resp2, resp3):
        assert not any(h.lower().startswith("access-control-") for h in r.headers), dict(r.headers)
        assert "Vary" not in r.headers or "origin" not in names(r.headers["Vary"])
    assert resp3.status == 405


async def test_production_allows_no_origin_unless_told(start_service):
    service = await start_service(VIBE_ENV="production")
    resp = await service.client.options("/functions/v1/analytics-tracking/event", headers=preflight(APP))
    assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    resp = await service.client.get("/openapi.json", headers={"Origin": APP})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    told = await start_service(VIBE_ENV="production", CORS_ALLOWED_ORIGINS=APP)
    resp = await told.client.options("/functions/v1/analytics-tracking/event", headers=preflight(APP))
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == APP


async def test_check_config_names_the_origins_and_warns_on_any_origin_in_production(tmp_path):
    base = {"VIBE_DATA_DIR": str(tmp_path / "var")}

    async def cors_row(**env):
        code, out, _ = await run_cli("check-config", "--json", env={**base, **env})
        report = json.loads(out)
        [row] = [v for v in report["variables"] if v["name"] == "CORS_ALLOWED_ORIGINS"]
        return code, row, report["features"]["cross-origin requests (CORS)"]

    code, row, feature = await cors_row(**GOOD_PRODUCTION, CORS_ALLOWED_ORIGINS="*")
    assert code == 0 and row["state"] == "warning" and "any origin" in row["note"]  # a warning, not an error
    assert "production" in row["note"] and feature == "browsers on any origin may call the API (*)"
    code, row, _ = await cors_row(**GOOD_PRODUCTION)
    assert code == 0 and row["state"] == "unset" and row["note"].startswith("no cross-origin access")
    code, row, _ = await cors_row(**GOOD_PRODUCTION, CORS_ALLOWED_ORIGINS=f"{APP},https://www.example.com")
    assert code == 0 and row["state"] == "set" and row["note"].endswith(f"{APP}, https://www.example.com")
    code, row, _ = await cors_row()  # development: any origin, nothing to warn about
    assert code == 0 and row["state"] == "unset" and "(*)" in row["note"]
    code, out, _ = await run_cli("check-config", env={**base, **GOOD_PRODUCTION, "CORS_ALLOWED_ORIGINS": "*"})
    assert code == 0 and "warning" in out and "cross-origin requests (CORS): browsers on any origin" in out
    code, _, err = await run_cli("check-config", env={**base, "CORS_ALLOWED_ORIGINS": f"{APP}/login"})
    assert code == 2 and err.strip().count("\n") == 0 and "CORS_ALLOWED_ORIGINS" in err and "no path" in err
