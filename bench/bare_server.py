"""The baseline: a bare aiohttp handler that reads the body and answers JSON (no work at all)."""

import sys

sys.path.pop(0)  # not bench/: bench/email.py would shadow the standard library's email package

from aiohttp import web  # noqa: E402


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


app = web.Application()
app.router.add_post("/{tail:.*}", handle)
app.router.add_get("/health", health)
app.router.add_get("/{tail:.*}", handle)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
