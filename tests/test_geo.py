"""Geographic restrictions (issue 19) through HTTP: a MaxMind-format database built here (DE and US
networks, IPv4 and IPv6), requests through a trusted proxy's X-Forwarded-For or a CDN's country
header, the rules and the 451, what is never blocked, metrics, analytics, reload, start-up errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tokens
from analytics_support import BROWSER, PREFIX, stored
from conftest import load_event, run_cli, wait_until
from databases import count_request_queries
from email_support import SVIX_SECRET, svix_headers
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from vibe.web.keys import LOAD_MONITOR

USERS = "/functions/v1/user-management"
CHECK = {"action": "check_access", "data": {"resource_type": "commandment", "resource_id": "1"}}
DE4, DE6, US4, US6 = "203.0.113.7", "2001:db8:de::7", "198.51.100.7", "2001:db8:1::7"
UNKNOWN, PRIVATE = "192.0.2.1", "10.1.2.3"  # in no network of the database; a private address


def build_mmdb(path: Path, networks: dict[str, list[str]]) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country",
                        languages=["en"], description="vibe test countries")
    for country, nets in networks.items():
        writer.insert_network(IPSet(nets), {"country": {"iso_code": country, "names": {"en": country}}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def mmdb(tmp_path) -> Path:
    return build_mmdb(tmp_path / "countries.mmdb", {"DE": ["203.0.113.0/24", "2001:db8:de::/48"],
                                                    "US": ["198.51.100.0/24", "2001:db8:1::/48"]})


@pytest.fixture
def geo_service(start_service, mmdb):
    """The service with the test database; the test client (127.0.0.1) is the trusted proxy."""
    async def start(**env):
        return await start_service(GEOIP_DATABASE=str(mmdb), RATE_LIMIT_TRUSTED_PROXIES="127.0.0.1,::1", **env)
    return start


def via(ip: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **headers}


async def call(service, ip: str | None = None, path: str = USERS, **headers: str):
    return await service.client.post(path, json=CHECK, headers={**(via(ip) if ip else {}), **headers})


async def refused(resp) -> dict:
    assert resp.status == 451, (resp.status, await resp.text())
    body = await resp.json()
    assert body["error"]["code"] == "geo_blocked" and body["error"]["request_id"] == resp.headers["X-Request-ID"]
    return body["error"]


async def test_a_blocked_country_gets_451_naming_the_country_and_the_rule(geo_service):
    service = await geo_service(GEO_BLOCKED_COUNTRIES="de,RU")
    for ip in (DE4, DE6):
        error = await refused(await call(service, ip))
        assert error["details"] == {"country": "DE", "rule": "blocked_countries", "setting": "GEO_BLOCKED_COUNTRIES"}
        assert "(DE)" in error["message"]
    for ip in (US4, US6, UNKNOWN, PRIVATE):  # not blocked: the request goes on (and needs a token)
        resp = await call(service, ip)
        assert resp.status == 401 and "X-RateLimit-Limit" in resp.headers, ip
    ok = await call(service, US4, **tokens.auth(tokens.user_token()))
    assert ok.status == 200
    # every learner-facing function, the Segment door and the unsubscribe page
    for path in (f"{PREFIX}/event", "/v1/batch", "/functions/v1/email-notifications",
                 "/functions/v1/email-notifications/unsubscribe"):
        await refused(await call(service, DE4, path=path))
    resp = await service.client.get(f"{PREFIX}/metrics", headers=via(DE4))
    await refused(resp)


async def test_an_allowed_list_serves_only_those_countries_and_unknown_unless_told(geo_service):
    service = await geo_service(GEO_ALLOWED_COUNTRIES="US")
    error = await refused(await call(service, DE6))
    assert error["details"]["country"] == "DE" and error["details"]["rule"] == "allowed_countries"
    for ip in (US4, US6, UNKNOWN, PRIVATE):
        assert (await call(service, ip)).status == 401, ip

    strict = await geo_service(GEO_ALLOWED_COUNTRIES="US", GEO_BLOCK_UNKNOWN="true")
    for ip in (UNKNOWN, PRIVATE):
        error = await refused(await call(strict, ip))
        assert error["details"] == {"country": None, "rule": "block_unknown", "setting": "GEO_BLOCK_UNKNOWN"}
    assert (await call(strict, US6)).status == 401


async def test_the_country_header_is_believed_from_a_trusted_proxy(start_service):
    service = await start_service(GEO_COUNTRY_HEADER="CF-IPCountry", RATE_LIMIT_TRUSTED_PROXIES="127.0.0.1,::1",
                                  GEO_BLOCKED_COUNTRIES="DE")
    error = await refused(await call(service, **{"CF-IPCountry": "DE"}))
    assert error["details"]["country"] == "DE"
    await refused(await call(service, **{"CF-IPCountry": "de"}))
    for value in ("US", "XX", "T1", "Germany", ""):  # XX and T1: Cloudflare's unknown and Tor
        assert (await call(service, **{"CF-IPCountry": value})).status == 401, value
    assert (await call(service)).status == 401  # no header: unknown, allowed

    strict = await start_service(GEO_COUNTRY_HEADER="CloudFront-Viewer-Country",
                                 RATE_LIMIT_TRUSTED_PROXIES="127.0.0.1,::1", GEO_ALLOWED_COUNTRIES="US",
                                 GEO_BLOCK_UNKNOWN="true")
    assert (await call(strict, **{"CloudFront-Viewer-Country": "US"})).status == 401
    assert (await refused(await call(strict, **{"CF-IPCountry": "US"})))["details"]["rule"] == "block_unknown"


async def test_an_untrusted_peer_cannot_forge_the_header_or_x_forwarded_for(start_service, mmdb):
    # The test client (127.0.0.1) is not the trusted proxy here.
    common = {"GEOIP_DATABASE": str(mmdb), "GEO_COUNTRY_HEADER": "CF-IPCountry",
              "RATE_LIMIT_TRUSTED_PROXIES": "10.9.9.9"}
    service = await start_service(**common, GEO_BLOCKED_COUNTRIES="DE")
    for headers in ({"CF-IPCountry": "DE"}, via(DE4), via(DE6, **{"CF-IPCountry": "DE"})):
        resp = await service.client.post(USERS, json=CHECK, headers=headers)
        assert resp.status == 401, headers  # seen from 127.0.0.1: unknown, allowed
    # ... and a forged "allowed" country does not let a client in either
    strict = await start_service(**common, GEO_ALLOWED_COUNTRIES="US", GEO_BLOCK_UNKNOWN="true")
    for headers in ({"CF-IPCountry": "US"}, via(US4), via(US6, **{"CF-IPCountry": "US"})):
        error = await refused(await strict.client.post(USERS, json=CHECK, headers=headers))
        assert error["details"]["country"] is None, headers


async def test_webhooks_probes_metrics_and_operator_pages_are_never_blocked(geo_service):
    service = await geo_service(GEO_ALLOWED_COUNTRIES="US", GEO_BLOCK_UNKNOWN="true", EMAIL_WEBHOOK_SECRET=SVIX_SECRET)
    resend = json.dumps({"type": "email.delivered", "created_at": "2026-11-26T10:00:00.000Z",
                         "data": {"email_id": "re_unknown", "to": ["a@example.com"], "subject": "x"}}).encode()
    for ip in (DE4, UNKNOWN):
        resp = await service.post_event(load_event("customer.created"), headers=via(ip))
        assert resp.status == 200, await resp.text()
        resp = await service.client.post("/functions/v1/email-notifications/events", data=resend,
                                         headers={**svix_headers(resend), **via(ip)})
        assert resp.status == 200, await resp.text()  # Resend's signed delivery event
        for path, status in (("/health", 200), (f"{USERS}/health", 200), ("/metrics", 200),
                             ("/openapi.json", 200), ("/dashboard", 401)):
            resp = await service.client.get(path, headers=via(ip))
            assert resp.status == status, (path, resp.status)
    await refused(await call(service, DE4))


async def test_the_451_comes_before_authentication_and_the_database(geo_service):
    service = await geo_service(GEO_BLOCKED_COUNTRIES="DE")
    calls = count_request_queries(service.db)
    for headers in ({}, tokens.auth("not.a.token"), tokens.auth(tokens.user_token())):
        resp = await call(service, DE4, **headers)
        await refused(resp)
        assert "X-RateLimit-Limit" not in resp.headers  # the rate limiter (who authenticates) never ran
    assert calls == []
    resp = await call(service, US4, **tokens.auth(tokens.user_token()))
    assert resp.status == 200 and calls  # the same path, allowed, does reach the database


async def test_refusals_are_counted_by_country_and_rule_in_metrics(geo_service):
    service = await geo_service(GEO_BLOCKED_COUNTRIES="DE", GEO_BLOCK_UNKNOWN="true")
    for ip in (DE4, DE6, UNKNOWN, US4):
        await call(service, ip)
    text = await (await service.client.get("/metrics")).text()
    assert 'vibe_geo_refused_requests_total{country="DE",rule="blocked_countries"} 2.0' in text
    assert 'vibe_geo_refused_requests_total{country="unknown",rule="block_unknown"} 1.0' in text
    assert 'country="US"' not in text
    assert 'vibe_http_requests_total{function="user-management",method="POST",status="451"} 3.0' in text


async def test_health_and_check_config_say_whether_the_feature_is_on(start_service, geo_service, mmdb, tmp_path):
    off = await (await (await start_service()).client.get("/health")).json()
    assert off["status"] == "healthy" and off["functions"]["geo"]["mode"] == "off"
    doc = await (await (await geo_service(GEO_BLOCKED_COUNTRIES="DE")).client.get("/health")).json()
    geo = doc["functions"]["geo"]
    assert geo["status"] == "healthy" and geo["mode"] == "database" and geo["rule"] == "refuse DE"
    assert geo["database"]["type"] == "GeoLite2-Country" and geo["database"]["built"].endswith("Z")

    base = {"VIBE_DATA_DIR": str(tmp_path / "cli")}
    code, out, _ = await run_cli("check-config", "--json", env=base)
    assert code == 0 and json.loads(out)["features"]["geographic restrictions"].startswith("off")
    code, out, _ = await run_cli("check-config", "--json", env={
        **base, "GEOIP_DATABASE": str(mmdb), "GEO_ALLOWED_COUNTRIES": "us,ca", "GEO_BLOCK_UNKNOWN": "yes"})
    report = json.loads(out)
    assert code == 0 and report["features"]["geographic restrictions"] == \
        f"on: database {mmdb}; rule: serve only CA,US and unknown countries"
    code, out, _ = await run_cli("check-config", env=base)
    assert "geographic restrictions: off" in out


async def test_the_country_is_recorded_on_analytics_events_and_shown_on_the_dashboard(geo_service):
    service = await geo_service(ANALYTICS_WRITE_KEY="wk_geo_test_write_key")
    browser = {"User-Agent": BROWSER, "Content-Type": "application/json"}
    for message_id, ip, context in (("g-1", US4, None), ("g-2", DE6, {"page": {"path": "/"}}),
                                    ("g-3", US6, {"location": {"country": "FR", "city": "Lyon"}}),
                                    ("g-4", PRIVATE, None)):
        body = {"event": "Opened", "anonymous_id": "anon-geo", "message_id": message_id, "context": context}
        resp = await service.client.post(f"{PREFIX}/event", data=json.dumps(body), headers={**browser, **via(ip)})
        assert resp.status == 200, await resp.text()
    # a server's request (write key) says where the server is, not the learner: nothing added
    resp = await service.client.post(f"{PREFIX}/event", json={"event": "Opened", "user_id": "u-1", "message_id": "g-5"},
                                     headers={"X-Write-Key": "wk_geo_test_write_key", **via(DE4)})
    assert resp.status == 200
    contexts = {r["message_id"]: json.loads(r["context"]) for r in await stored(service)}
    assert contexts["g-1"] == {"location": {"country": "US"}}
    assert contexts["g-2"] == {"page": {"path": "/"}, "location": {"country": "DE"}}
    assert contexts["g-3"] == {"location": {"country": "FR", "city": "Lyon"}}  # the caller's is kept
    assert contexts["g-4"] == {} and contexts["g-5"] == {}
    page = await service.client.get("/dashboard", headers=tokens.auth(tokens.admin_token()))
    html = await page.text()
    assert page.status == 200
    table = html.split('<table id="countries">', 1)[1].split("</table>", 1)[0]
    assert "<td>unknown</td><td>2</td>" in table
    for country in ("US", "DE", "FR"):
        assert f"<td>{country}</td><td>1</td>" in table
    assert "geographic lookups: database" in html


async def test_a_replaced_database_file_is_reloaded(geo_service, mmdb, tmp_path):
    service = await geo_service(GEO_BLOCKED_COUNTRIES="DE", GEOIP_CHECK_SECONDS="0.05")
    await refused(await call(service, DE4))
    # the network moves to the US: a new file, moved into place the way updaters do it
    new = build_mmdb(tmp_path / "next.mmdb", {"US": ["203.0.113.0/24"], "DE": ["192.0.2.0/24"]})
    os.replace(new, mmdb)

    async def moved() -> bool:
        return (await call(service, DE4)).status == 401

    await wait_until(moved, timeout=5)
    await refused(await call(service, UNKNOWN))
    geo = (await (await service.client.get("/health")).json())["functions"]["geo"]
    assert geo["database"]["loads"] == 2 and geo["status"] == "healthy"
    # a broken file is not taken: the last good version keeps answering, and /health says why
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    os.replace(broken, mmdb)

    async def noticed() -> bool:
        return "error" in (await (await service.client.get("/health")).json())["functions"]["geo"]

    await wait_until(noticed, timeout=5)
    geo = (await (await service.client.get("/health")).json())["functions"]["geo"]
    assert geo["status"] == "degraded" and "still using the version loaded before" in geo["error"]
    await refused(await call(service, UNKNOWN))
    # written over in place (`cp`): the service reads a private copy, so nothing moves under it
    good = build_mmdb(tmp_path / "again.mmdb", {"DE": ["203.0.113.0/24"]})
    mmdb.write_bytes(good.read_bytes())

    async def back() -> bool:
        return (await call(service, DE4)).status == 451

    await wait_until(back, timeout=5)
    geo = (await (await service.client.get("/health")).json())["functions"]["geo"]
    assert geo["status"] == "healthy" and geo["database"]["loads"] == 3
    assert (await call(service, UNKNOWN)).status == 401


async def test_country_groups_shrink_first_under_load(geo_service):
    service = await geo_service(RATE_LIMIT_SHRINK_ORDER="country:DE,anonymous,free", RATE_LIMIT_ANONYMOUS="40")
    service.app[LOAD_MONITOR].level = 1  # the load level set by hand, as test_ratelimit does
    de, us = await call(service, DE4), await call(service, US4)
    assert int(de.headers["X-RateLimit-Limit"]) == 20 and int(us.headers["X-RateLimit-Limit"]) == 40
    service.app[LOAD_MONITOR].level = 2
    de, us = await call(service, DE6), await call(service, US6)
    assert int(de.headers["X-RateLimit-Limit"]) == 10 and int(us.headers["X-RateLimit-Limit"]) == 20


@pytest.mark.parametrize("env, named", [
    ({"GEO_BLOCKED_COUNTRIES": "DE", "GEO_ALLOWED_COUNTRIES": "US", "GEOIP_DATABASE": "{mmdb}"},
     "GEO_ALLOWED_COUNTRIES: set GEO_BLOCKED_COUNTRIES or GEO_ALLOWED_COUNTRIES, not both"),
    ({"GEOIP_DATABASE": "{missing}"}, "GEOIP_DATABASE: {missing}: no such file"),
    ({"GEOIP_DATABASE": "{junk}"}, "GEOIP_DATABASE: {junk}: not a MaxMind-format database"),
    ({"GEO_BLOCKED_COUNTRIES": "DEU", "GEOIP_DATABASE": "{mmdb}"}, "GEO_BLOCKED_COUNTRIES: expected ISO 3166 alpha-2"),
    ({"GEO_BLOCKED_COUNTRIES": "DE"}, "GEO_BLOCKED_COUNTRIES: needs GEO_COUNTRY_HEADER or GEOIP_DATABASE"),
    ({"GEO_COUNTRY_HEADER": "CF-IPCountry"}, "GEO_COUNTRY_HEADER: it is believed only from RATE_LIMIT_TRUSTED_PROXIES"),
])
async def test_a_bad_configuration_is_one_clear_start_up_error(env, named, mmdb, tmp_path):
    (tmp_path / "junk.mmdb").write_bytes(b"\0" * 4096)
    paths = {"mmdb": str(mmdb), "missing": str(tmp_path / "nowhere" / "GeoLite2-Country.mmdb"),
             "junk": str(tmp_path / "junk.mmdb")}
    env = {k: v.format(**paths) for k, v in env.items()}
    named = named.format(**paths)
    for command in (("check-config",), ("serve", "--port", "0")):
        code, _, err = await run_cli(*command, env={"VIBE_DATA_DIR": str(tmp_path / "var"), **env})
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and named in lines[0], (command, err)
