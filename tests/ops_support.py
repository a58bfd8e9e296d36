"""Shared by the operations tests: a test plugin with routes that fail or answer slowly (for
metrics, alerts and logs tests), a production environment check-config accepts, and headless
Chromium (the dashboard and the browser CORS tests)."""

import asyncio
import logging
import shutil

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


GOOD_PRODUCTION = {
    "VIBE_ENV": "production", "DATABASE_URL": "postgresql://vibe@db.internal:5432/vibe",
    "STRIPE_SECRET_KEY": "sk_live_" + "a1" * 12, "STRIPE_WEBHOOK_SECRET": "whsec_" + "b2" * 12,
    "SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "eyJh.eyJz.sig",
    "ADMIN_EMAIL": "ops@example.com", "ALERT_WEBHOOK": "https://hooks.example.com/T/B/X",
}

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


async def run(*argv: str) -> str:
    """Run a program (Chromium) to its end; its stdout (fails the test on a non-zero exit)."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()
