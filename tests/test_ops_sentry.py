"""SENTRY_DSN: an unhandled error reaches Sentry (a local receiver speaking its envelope endpoint)."""

import asyncio

import pytest
from aiohttp import web
from conftest import wait_until
from live_service import LiveService

pytestmark = pytest.mark.slow
pytest.importorskip("sentry_sdk", reason="the sentry extra is not installed")

PLUGIN = '''
from aiohttp import web
from vibe.plugins.hookspecs import hookimpl

@hookimpl
def register_routes(app):
    async def boom(request):
        raise RuntimeError("boom for sentry")
    app.router.add_get("/test/boom", boom)
'''


async def test_an_unhandled_error_is_sent_to_sentry(aiohttp_server, database_url, tmp_path):
    envelopes: list[bytes] = []

    async def envelope(request):
        envelopes.append(await request.read())  # aiohttp undoes the gzip Content-Encoding
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/1/envelope/", envelope)
    server = await aiohttp_server(app)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "boom_plugin.py").write_text(PLUGIN)
    service = await LiveService.on(database_url, str(tmp_path / "var"), VIBE_PLUGINS_DIRS=str(plugins),
                                   SENTRY_DSN=f"http://publickey@127.0.0.1:{server.port}/1").start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{service.url}/test/boom") as resp:
                assert resp.status == 500
                rid = resp.headers["X-Request-ID"]
        await wait_until(lambda: asyncio.sleep(0, any(b"boom for sentry" in e for e in envelopes)), timeout=20)
    finally:
        await service.stop()
    event = next(e for e in envelopes if b"boom for sentry" in e)
    assert b"RuntimeError" in event and rid.encode() in event
