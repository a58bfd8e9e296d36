"""A real browser on another origin: headless Chromium loads a page from one loopback port and,
from it, calls the service (`python run.py serve`) on another, as the platform's front end does
with `supabase.functions.invoke`: an anonymous analytics event with the anon key, a signed-in
`check_access`, the anon key where a user is needed; and a page on an origin that is not allowed,
whose call the browser refuses. The test reads what each page received from its DOM
(`--dump-dom`; with `--virtual-time-budget` Chromium waits for the page's fetches to finish)."""

import asyncio
import html
import json
import re
import tempfile
import uuid

import pytest
import tokens
from aiohttp import web
from analytics_support import BROWSER
from live_service import LiveService, open_db
from ops_support import CHROMIUM, FLAGS, run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")]

ANON_KEY = "sb_publishable_" + "browserTestAnonKey0123456789"
EVENT = "/functions/v1/analytics-tracking/event"
USERS = "/functions/v1/user-management"
CHECK = {"action": "check_access", "data": {"resource_type": "commandment", "resource_id": "1"}}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>vibe from a browser</title></head>
<body><pre id="out">pending</pre>
<script>
const SERVICE = %(service)s, ANON_KEY = %(anon)s, CALLS = %(calls)s;
async function call([path, token, body]) {
  try {
    // what supabase.functions.invoke sends: a bearer token, the anon key, the client's name
    const resp = await fetch(SERVICE + path, {method: "POST", body: JSON.stringify(body), headers: {
      "Authorization": "Bearer " + token, "apikey": ANON_KEY, "x-client-info": "supabase-js/2.49.4",
      "content-type": "application/json"}});
    return {status: resp.status, request_id: resp.headers.get("X-Request-ID"),
            limit: resp.headers.get("X-RateLimit-Limit"), body: await resp.json()};
  } catch (e) {
    return {error: e.name, message: e.message};
  }
}
(async () => {
  const seen = {};
  for (const [name, request] of Object.entries(CALLS)) seen[name] = await call(request);
  document.getElementById("out").textContent = JSON.stringify(seen);
})();
</script></body></html>
"""


async def page_server(aiohttp_server, calls: dict) -> tuple[str, dict]:
    """A second aiohttp server (another origin) serving the page; `config` gets `service` later."""
    config: dict = {}

    async def page(request):
        return web.Response(content_type="text/html", text=PAGE % {
            "service": json.dumps(config["service"]), "anon": json.dumps(ANON_KEY), "calls": json.dumps(calls)})

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}", config


async def open_in_chromium(url: str) -> dict:
    with tempfile.TemporaryDirectory() as profile:
        dom = await run(CHROMIUM, *FLAGS, "--headless=new", "--no-proxy-server", f"--user-data-dir={profile}",
                        f"--user-agent={BROWSER}", "--virtual-time-budget=20000", "--dump-dom", url)
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.DOTALL)
    assert found and found.group(1) != "pending", dom[:2000]
    return json.loads(html.unescape(found.group(1)))


async def test_a_page_on_another_origin_calls_the_service(aiohttp_server, database_url, tmp_path):
    user_id = str(uuid.uuid4())
    event = {"event_type": "page_view", "anonymous_id": "anon-browser-1", "properties": {"page": "/dashboard"}}
    allowed, allowed_config = await page_server(aiohttp_server, {
        "anonymous_event": [EVENT, ANON_KEY, event],
        "check_access": [USERS, tokens.user_token(user_id), CHECK],
        "anon_check_access": [USERS, ANON_KEY, CHECK],
    })
    refused, refused_config = await page_server(aiohttp_server, {
        "anonymous_event": [EVENT, ANON_KEY, {**event, "anonymous_id": "anon-refused-1"}]})
    live = LiveService.on(database_url, str(tmp_path / "var"), SUPABASE_JWT_SECRET=tokens.JWT_SECRET,
                          SUPABASE_ANON_KEY=ANON_KEY, CORS_ALLOWED_ORIGINS=allowed)
    allowed_config["service"] = refused_config["service"] = live.url
    await live.start()
    try:
        seen, other = await asyncio.gather(open_in_chromium(allowed + "/"), open_in_chromium(refused + "/"))
    finally:
        code, log = await live.stop()
    assert code == 0, log

    # (a) the anonymous event: the anon key is an anonymous caller, accepted with its anonymous_id
    anonymous = seen["anonymous_event"]
    assert anonymous.get("status") == 200, anonymous
    assert anonymous["body"].get("success") is True or anonymous["body"].get("accepted") == 1, anonymous
    assert anonymous["request_id"] and anonymous["limit"]  # exposed headers are readable by the page
    # (b) the signed-in learner's check_access
    check = seen["check_access"]
    assert check["status"] == 200 and check["body"]["allowed"] is True, check
    assert check["body"]["resource_id"] == "1" and check["request_id"]
    # the anon key where a user is needed: a 401 the page can read, telling it to sign in
    anon = seen["anon_check_access"]
    assert anon["status"] == 401 and anon["body"]["error"]["code"] == "sign_in_required", anon
    assert anon["body"]["message"].startswith("Sign in")
    # (c) the page on another origin: the browser refuses the call (the preflight answered 403)
    assert other["anonymous_event"]["error"] == "TypeError", other

    db = await open_db(database_url)
    try:
        rows = await db.fetchall("SELECT anonymous_id, user_id, event, source, properties, is_bot FROM analytics_events "
                                 "WHERE anonymous_id IN ('anon-browser-1', 'anon-refused-1')")
    finally:
        await db.close()
    assert [(r["anonymous_id"], r["user_id"], r["source"]) for r in rows] == [
        ("anon-browser-1", None, "anonymous")]
    assert rows[0]["event"] == "page_view" and json.loads(rows[0]["properties"])["page"] == "/dashboard"
    assert not rows[0]["is_bot"]
