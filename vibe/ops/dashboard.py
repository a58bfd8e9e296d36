"""`GET /dashboard`: one page an operator keeps open (aiohttp-jinja2, templates/pages/dashboard.html).

Admins only: an admin bearer token, or HTTP Basic with DASHBOARD_PASSWORD (any user name), so a
browser can open it. The page refreshes itself every DASHBOARD_REFRESH_SECONDS; its charts are
SVG drawn here (`charts`), so it needs nothing from the internet.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from vibe.db.database import DatabaseUnavailable
from vibe.keys import DB, SETTINGS
from vibe.ops import charts, health
from vibe.ops.keys import DASHBOARD_PAGES, METRICS
from vibe.paths import TEMPLATES_DIR
from vibe.web.auth import principal_of
from vibe.web.errors import ApiError

DAY = 86400.0
REALM = {"WWW-Authenticate": 'Basic realm="vibe dashboard", charset="UTF-8"'}


def _password_ok(request: web.Request) -> bool:
    expected = request.app[SETTINGS].ops.dashboard_password
    header = request.headers.get("Authorization", "")
    if not expected or not header.startswith("Basic "):
        return False
    try:
        _, _, given = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


async def authorize(request: web.Request) -> None:
    if _password_ok(request):
        return
    if request.headers.get("Authorization", "").startswith("Bearer "):
        if (await principal_of(request)).is_admin:
            return
        raise ApiError(403, "forbidden", "The dashboard is for administrators.")
    raise ApiError(401, "unauthorized", "Sign in with an admin token or the dashboard password.", headers=REALM)


async def business(app: web.Application) -> dict[str, Any]:
    """Active subscriptions by tier, monthly recurring revenue, and the last 30 days' payments."""
    db, since = app[DB], time.time() - 30 * DAY
    subs = await db.fetchall(
        "SELECT tier, billing_interval, currency, COUNT(*) AS n, SUM(amount) AS amount FROM subscriptions "
        "WHERE status IN ('active', 'trialing') GROUP BY tier, billing_interval, currency")
    pays = await db.fetchall(
        "SELECT status, currency, COUNT(*) AS n, SUM(amount) AS amount FROM payments "
        "WHERE created >= %s GROUP BY status, currency", (int(since),))
    by_tier: dict[str, int] = {}
    mrr: dict[str, float] = {}
    for r in subs:
        by_tier[r["tier"]] = by_tier.get(r["tier"], 0) + int(r["n"])
        monthly = (r["amount"] or 0) / (12 if r["billing_interval"] == "year" else 1)
        cur = (r["currency"] or "usd").upper()
        mrr[cur] = mrr.get(cur, 0) + monthly / 100
    revenue = {f"{r['status']} {(r['currency'] or '').upper()}": round((r["amount"] or 0) / 100, 2) for r in pays}
    return {"subscriptions": by_tier, "mrr": {k: round(v, 2) for k, v in mrr.items()}, "payments_30d": revenue}


async def analytics_volume(app: web.Application) -> dict[str, int]:
    """The ten most frequent events of the last 24 hours."""
    rows = await app[DB].fetchall(
        "SELECT event, COUNT(*) AS n FROM analytics_events WHERE received_at >= %s "
        "GROUP BY event ORDER BY n DESC LIMIT 10", (time.time() - DAY,))
    return {r["event"]: int(r["n"]) for r in rows}


async def analytics_countries(app: web.Application) -> dict[str, int]:
    """The last 24 hours' events by `context.location.country` (web.geo records it), ten at most."""
    db = app[DB]
    country = ("CAST(context AS json) -> 'location' ->> 'country'" if db.dialect == "postgresql"
               else "json_extract(context, '$.location.country')")  # json, not jsonb: it takes any text JSON
    rows = await db.fetchall(
        f"SELECT {country} AS country, COUNT(*) AS n FROM analytics_events WHERE received_at >= %s "
        "GROUP BY 1 ORDER BY n DESC LIMIT 10", (time.time() - DAY,))
    return {str(r["country"]) if r["country"] is not None else "unknown": int(r["n"]) for r in rows}


async def stripe_outcomes(app: web.Application) -> dict[str, int]:
    rows = await app[DB].fetchall("SELECT status, COUNT(*) AS n FROM stripe_events GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def dashboard(request: web.Request) -> web.Response:
    await authorize(request)
    app = request.app
    doc = await health.snapshot(app)
    window = app[METRICS].window
    hour = window.summary(3600)
    figures: dict[str, Any] = {"subscriptions": {}, "mrr": {}, "payments_30d": {}}
    outcomes: dict[str, int] = {}
    volume: dict[str, int] = {}
    countries: dict[str, int] = {}
    if doc["database"]["reachable"]:
        try:
            figures = await business(app)
            outcomes = await stripe_outcomes(app)
            volume = await analytics_volume(app)
            countries = await analytics_countries(app)
        except DatabaseUnavailable:
            pass
    latency = {k: round((hour[k] or 0) * 1000, 1) for k in ("p50", "p95", "p99")}
    context = {
        "doc": doc, "hour": hour, "figures": figures,
        "refresh": app[SETTINGS].ops.dashboard_refresh_seconds,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "traffic": charts.series_bars(window.series(), keys=("requests", "errors"), width=1200,
                                      title="Requests per minute"),
        "latency": charts.hbars(latency, unit=" ms", title="Latency percentiles, last hour"),
        "stripe": charts.hbars(outcomes, title="Stripe events by outcome"),
        "queues": charts.hbars(doc["queues"], title="Queues"),
        "volume": charts.hbars(volume, title="Analytics events, last 24 hours"),
        "countries": countries, "geo": doc["functions"].get("geo", {}),
        "tiers": charts.hbars(figures["subscriptions"], title="Active subscriptions by tier"),
        "function_figures": {name: r.get("figures", {}) for name, r in doc["functions"].items()},
    }
    response = aiohttp_jinja2.render_template("dashboard.html", request, context, app_key=DASHBOARD_PAGES)
    response.headers["Cache-Control"] = "no-store"
    return response


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "pages"), app_key=DASHBOARD_PAGES,
                         autoescape=True)
    app.router.add_get("/dashboard", dashboard)
