"""`POST /functions/v1/billing/checkout` and `POST /functions/v1/billing/portal`: the front end
starts a payment, or sends a learner to Stripe's billing portal (docs/billing.md).

Checkout creates the learner's Stripe customer when they have none (`email`, `metadata.userId`;
linked at once, as `customer.created` would), then a Checkout Session in subscription mode with
`client_reference_id`, `metadata.userId` and `metadata.referralCode` (on the session and on the
subscription it makes), the price of the tier and interval (`STRIPE_PRICES`, else the price
whose lookup key is `tier_interval`), and an idempotency key per learner and request (the
caller's `Idempotency-Key`, else the request's content): a double click is one session. vibe's
state changes only when Stripe's events say so. Redirect URLs must be on PUBLIC_URL's host or
an origin CORS_ALLOWED_ORIGINS names (not `*`): no open redirect.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

import stripe
from aiohttp import web

from vibe.billing.keys import STRIPE_API
from vibe.billing.settings import INTERVALS
from vibe.billing.state import GRANTING, get_profile, link_customer
from vibe.billing.stripe_api import StripeApi, StripeUnavailable, api_error, disabled_reason
from vibe.config import Settings
from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.plugins.context import StripeEventContext
from vibe.web.auth import require
from vibe.web.errors import ApiError
from vibe.web.json_body import load_json
from vibe.web.validation import Field, Shape, invalid

PATH = "/functions/v1/billing"
URL = Field("str", required=True, max_length=2048, pattern=r"https?://\S+",
            description="on PUBLIC_URL's host or an origin of CORS_ALLOWED_ORIGINS")
CHECKOUT = Shape({
    "tier": Field("str", choices=("starter", "pro", "expert"), description="the tier to subscribe to (or `price`)"),
    "price": Field("str", pattern=r"price_[A-Za-z0-9_]{1,200}", description="a Stripe price id (or `tier`)"),
    "interval": Field("str", choices=INTERVALS, description="with `tier`: monthly (default) or yearly"),
    "success_url": URL, "cancel_url": URL,
    "referral_code": Field("str", max_length=64, pattern=r"[A-Za-z0-9_-]+",
                           description="the referrer's code (`metadata.referralCode`)"),
})
PORTAL = Shape({"return_url": URL})
SESSION_ANSWER = {"type": "object", "required": ["id", "url"], "properties": {
    "id": {"type": "string", "description": "the Checkout Session's id (cs_…)"},
    "url": {"type": "string", "description": "Stripe's hosted page: send the browser there"}}}
PORTAL_ANSWER = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}


def allowed_redirect(url: str, settings: Settings) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        # a malformed host ("https://4]", "https://[::1") or a port out of range raises ValueError
        hostname, _port = parts.hostname, parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not hostname or parts.username or parts.password:
        return False
    public = urllib.parse.urlsplit(settings.public_url)
    if hostname == public.hostname:
        return True
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    return origin in (o for o in settings.web.cors_allowed_origins if o != "*")


def _check_urls(clean: dict[str, Any], settings: Settings, *names: str) -> None:
    for name in names:
        if not allowed_redirect(clean[name], settings):
            raise invalid(f"body.{name}", "must be on PUBLIC_URL's host or an origin in CORS_ALLOWED_ORIGINS")


async def _body(request: web.Request, shape: Shape) -> dict[str, Any]:
    return shape.check(load_json(await request.read()), where="body")


def _api(request: web.Request) -> StripeApi:
    if STRIPE_API not in request.app:
        raise ApiError(503, "billing_disabled", disabled_reason(request.app[SETTINGS]) or "Stripe is not configured.")
    return request.app[STRIPE_API]


def idempotency_key(kind: str, user_id: str, request: web.Request, params: dict[str, Any]) -> str:
    """One key per learner and request: the caller's Idempotency-Key, else what was asked."""
    given = request.headers.get("Idempotency-Key", "").strip()[:200]
    digest = hashlib.sha256((given or json.dumps(params, sort_keys=True)).encode()).hexdigest()[:40]
    return f"vibe-{kind}-{user_id}-{digest}"


async def call_stripe(api: StripeApi, method, *args: Any, key: str | None = None):
    """A Stripe call whose failure is the caller's JSON error (vibe.billing.stripe_api.api_error)."""
    try:
        return await api.call(method, *args, options={"idempotency_key": key} if key else None)
    except (stripe.StripeError, StripeUnavailable) as exc:
        raise api_error(exc) from None


async def price_for(api: StripeApi, settings: Settings, clean: dict[str, Any]) -> str:
    """The price a request names: `price`, or `tier` and `interval` (STRIPE_PRICES, else a lookup key)."""
    if clean.get("price"):
        if clean.get("tier"):
            raise invalid("tier", "give tier or price, not both")
        return clean["price"]
    if not clean.get("tier"):
        raise invalid("tier", "is required (or price)")
    key = f"{clean['tier']}_{clean.get('interval') or 'monthly'}"
    if key in settings.billing.prices:
        return settings.billing.prices[key]
    found = await call_stripe(api, api.client.v1.prices.list_async, {"lookup_keys": [key], "active": True, "limit": 1})
    if not found.data:
        raise ApiError(400, "unknown_price", f"No price for {key}: set STRIPE_PRICES={key}=price_… or give a "
                                             f"Stripe price the lookup key {key}.")
    return found.data[0].id


async def _customer(request: web.Request, api: StripeApi, profile: dict[str, Any]) -> str:
    """The learner's Stripe customer, made (and linked) when they have none."""
    if profile.get("stripe_customer_id"):
        return profile["stripe_customer_id"]
    user_id = profile["id"]
    params = {"email": profile.get("email"), "name": profile.get("full_name"), "metadata": {"userId": user_id}}
    customer = await call_stripe(api, api.client.v1.customers.create_async, {k: v for k, v in params.items() if v},
                                 key=f"vibe-customer-{user_id}")
    async with request.app[DB].transaction() as tx:
        ctx = StripeEventContext(tx=tx, settings=request.app[SETTINGS], pm=request.app[PLUGINS],
                                 event={"id": None})
        await link_customer(ctx, user_id, customer.id, profile.get("email"))
    return customer.id


async def _learner(request: web.Request) -> dict[str, Any]:
    principal = await require(request, "user", "admin")
    profile = await get_profile(request.app[DB], principal.user_id)
    if profile is None:
        raise ApiError(404, "profile_not_found", "Create the profile first (user-management: create_profile).")
    return profile


async def checkout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    profile = await _learner(request)
    clean = await _body(request, CHECKOUT)
    _check_urls(clean, settings, "success_url", "cancel_url")
    if profile["subscription_status"] in GRANTING and profile["tier"] != "free":
        raise ApiError(409, "already_subscribed", f"You already have the {profile['tier']} plan: change it in the "
                       "billing portal.", details={"portal": f"{PATH}/portal"})
    api = _api(request)
    price = await price_for(api, settings, clean)
    customer = await _customer(request, api, profile)
    metadata = {"userId": profile["id"], **({"referralCode": clean["referral_code"]} if clean.get("referral_code") else {})}
    params = {"mode": "subscription", "customer": customer, "client_reference_id": profile["id"],
              "line_items": [{"price": price, "quantity": 1}], "success_url": clean["success_url"],
              "cancel_url": clean["cancel_url"], "metadata": metadata, "subscription_data": {"metadata": metadata}}
    session = await call_stripe(api, api.client.v1.checkout.sessions.create_async, params,
                                key=idempotency_key("checkout", profile["id"], request, params))
    return web.json_response({"id": session.id, "url": session.url})


async def portal(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    profile = await _learner(request)
    clean = await _body(request, PORTAL)
    _check_urls(clean, settings, "return_url")
    if not profile.get("stripe_customer_id"):
        raise ApiError(409, "no_customer", "You have no Stripe customer yet: start with a checkout.",
                       details={"checkout": f"{PATH}/checkout"})
    api = _api(request)
    params = {"customer": profile["stripe_customer_id"], "return_url": clean["return_url"]}
    session = await call_stripe(api, api.client.v1.billing_portal.sessions.create_async, params,
                                key=idempotency_key("portal", profile["id"], request, params))
    return web.json_response({"url": session.url})


def setup_routes(app: web.Application) -> None:
    app.router.add_post(f"{PATH}/checkout", checkout)
    app.router.add_post(f"{PATH}/portal", portal)
