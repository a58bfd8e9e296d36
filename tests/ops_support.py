"""A test plugin with routes that fail or answer slowly (for metrics, alerts and logs tests)."""

import asyncio
import logging

from aiohttp import web

from vibe.plugins.hookspecs import hookimpl


class TroublePlugin:
    @hookimpl
    def register_routes(self, app):
        async def boom(request):
            raise RuntimeError("boom for the test")

        async def slow(request):
            await asyncio.sleep(float(request.query.get("s", "0.05")))
            logging.getLogger("vibe.test").info("slow answer")
            return web.json_response({"ok": True})

        app.router.add_get("/test/boom", boom)
        app.router.add_get("/test/slow", slow)
