"""The Stripe the tests talk to: localstripe (a stateful emulator, PyPI), with a thin bridge over
what it lacks, and a small fake of Checkout Sessions and the billing portal.

Run as `python tests/stripe_emulator.py --port N` (the `stripe_emulator` fixture does, once per
session, on 127.0.0.1). localstripe keeps its objects in memory here (its pickle file in /tmp,
shared by every localstripe on the machine, is turned off).

The bridge changes nothing vibe sends; it answers, the way Stripe's API reference documents,
what localstripe 1.15.10 cannot:
- `GET /v1/events` with `types[]` (and `created`, `limit`, `starting_after`), newest first;
- Prices: plans stand in for them (a plan `price_…` is the price `price_…`), so `items[i][price]`
  becomes `items[i][plan]`, and `GET /v1/prices?lookup_keys[]=` answers from the plans'
  `metadata.lookup_key`;
- `proration_behavior` on a subscription update (localstripe answers 500) is recorded and dropped;
- a subscription update sends `customer.subscription.updated` (localstripe sends none);
- `DELETE /_config/webhooks/{id}` unregisters an endpoint.

The fake: `POST /v1/checkout/sessions`, `POST /v1/billing_portal/sessions` (with Stripe's
idempotency: a key replays its first answer, and a key reused with other parameters is a 400),
and `POST /_fake/checkout/sessions/{id}/complete`, which does what paying does: the
subscription in localstripe (with `subscription_data.metadata`) and `checkout.session.completed`.
Every request is recorded (`GET /_fake/requests`, `DELETE /_fake/requests`); `POST /_fake/fail`
makes the next matching requests fail with a Stripe error of one's choosing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

from aiohttp import web
from localstripe import resources as R
from localstripe import server as S
from localstripe import webhooks as W
from localstripe.errors import UserError

R.Store.dump_to_disk = lambda self: None  # no shared /tmp/localstripe.pickle
R.Store.try_load_from_disk = lambda self: None

RECORDED: list[dict[str, Any]] = []
FAILURES: list[dict[str, Any]] = []
SESSIONS: dict[str, dict[str, Any]] = {}
IDEMPOTENT: dict[str, tuple[str, dict]] = {}


class Exported:
    """What localstripe's Event takes as its object: anything with `_export()`."""

    def __init__(self, obj: dict):
        self.obj = obj

    def _export(self, expand=None):
        return json.loads(json.dumps(self.obj))


def emit(event_type: str, obj: dict) -> dict:
    event = R.Event(event_type, Exported(obj))
    W.schedule_webhook(event)
    return event._export()


async def form(request: web.Request) -> dict:
    data = await request.post()
    return S.unflatten_data(data) if data else {}


@web.middleware
async def bridge(request: web.Request, handler):
    params = S.unflatten_data(request.query) if request.method == "GET" else await form(request)
    if not request.path.startswith("/_"):
        if S.get_api_key(request) is None:
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "message": "Invalid API Key provided"}}, status=401)
        RECORDED.append({"method": request.method, "path": request.path, "params": json.loads(json.dumps(params)),
                         "idempotency_key": request.headers.get("Idempotency-Key"),
                         "stripe_version": request.headers.get("Stripe-Version")})
        for failure in FAILURES:
            if failure["path"] == request.path and failure["times"] > 0:
                failure["times"] -= 1
                headers = {"Retry-After": str(failure["retry_after"])} if failure.get("retry_after") else {}
                return web.json_response({"error": {"type": failure["type"], "message": failure["message"],
                                                    "code": failure.get("code")}},
                                         status=failure["status"], headers=headers)
    try:
        return await ROUTES.get((request.method, request.path), handler)(request) \
            if (request.method, request.path) in ROUTES else await _prefixed(request, handler, params)
    except UserError as exc:
        return exc.to_response()


async def _prefixed(request, handler, params):
    parts = request.path.strip("/").split("/")
    if request.method == "POST" and parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
        return await update_subscription(parts[2], params)
    if request.method == "DELETE" and parts[:2] == ["_config", "webhooks"] and len(parts) == 3:
        W._webhooks.pop(parts[2], None)
        return web.Response()
    if request.method == "POST" and parts[:3] == ["_fake", "checkout", "sessions"] and parts[-1] == "complete":
        return complete_checkout(parts[3])
    return await handler(request)


def _items(items: Any) -> Any:
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item:
                item["plan"] = item.pop("price")
    return items


async def list_events(request: web.Request) -> web.Response:
    q = S.unflatten_data(request.query)
    types = q.get("types") or ([q["type"]] if q.get("type") else None)
    created = q.get("created") or {}
    bounds = {k: int(v) for k, v in created.items()} if isinstance(created, dict) else {"eq": int(created)}
    checks = {"gt": lambda c, b: c > b, "gte": lambda c, b: c >= b, "lt": lambda c, b: c < b,
              "lte": lambda c, b: c <= b, "eq": lambda c, b: c == b}
    events = [e for k, e in R.store.items() if k.startswith("event:")
              and (types is None or e.type in types)
              and all(checks[op](e.created, b) for op, b in bounds.items())]
    events.reverse()  # Stripe lists newest first (localstripe keeps creation order)
    start = 0
    if q.get("starting_after"):
        start = next((i + 1 for i, e in enumerate(events) if e.id == q["starting_after"]), len(events))
    limit = int(q.get("limit") or 10)
    page = events[start:start + limit]
    return S.json_response({"object": "list", "url": "/v1/events", "has_more": start + limit < len(events),
                            "data": [e._export() for e in page]})


def _price(plan) -> dict:
    meta = plan.metadata or {}
    return {"id": plan.id, "object": "price", "active": plan.active, "currency": plan.currency,
            "unit_amount": plan.amount, "lookup_key": meta.get("lookup_key"), "metadata": meta,
            "product": getattr(plan.product, "id", plan.product), "type": "recurring",
            "recurring": {"interval": plan.interval, "interval_count": plan.interval_count}}


async def list_prices(request: web.Request) -> web.Response:
    q = S.unflatten_data(request.query)
    keys = q.get("lookup_keys")
    plans = [p for k, p in R.store.items() if k.startswith("plan:")]
    prices = [_price(p) for p in plans if keys is None or (p.metadata or {}).get("lookup_key") in keys]
    return S.json_response({"object": "list", "url": "/v1/prices", "has_more": False, "data": prices})


async def create_subscription(request: web.Request) -> web.Response:
    data = await form(request)
    data.pop("proration_behavior", None)
    expand = data.pop("expand", None)
    data["items"] = _items(data.get("items"))
    return S.json_response(R.Subscription._api_create(**data)._export(expand=expand))


async def update_subscription(sub_id: str, data: dict) -> web.Response:
    data.pop("proration_behavior", None)  # recorded above; localstripe answers 500 to it
    expand = data.pop("expand", None)
    if "items" in data:
        data["items"] = _items(data["items"])
    sub = R.Subscription._api_update(sub_id, **data)
    emit("customer.subscription.updated", sub._export())
    return S.json_response(sub._export(expand=expand))


def _idempotent(request_key: str | None, path: str, params: dict) -> dict | None:
    if not request_key:
        return None
    seen = IDEMPOTENT.get(request_key)
    if seen is None:
        return None
    if seen[0] != json.dumps([path, params], sort_keys=True):
        raise UserError(400, "Keys for idempotent requests can only be used with the same parameters "
                               "they were first used with.")
    return seen[1]


def _remember(request_key: str | None, path: str, params: dict, answer: dict) -> None:
    if request_key:
        IDEMPOTENT[request_key] = (json.dumps([path, params], sort_keys=True), answer)


def _invalid(message: str, param: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "message": message, "param": param}},
                             status=400)


async def create_checkout_session(request: web.Request) -> web.Response:
    params = await form(request)
    key = request.headers.get("Idempotency-Key")
    replay = _idempotent(key, request.path, params)
    if replay is not None:
        return web.json_response(replay)
    mode = params.get("mode")
    if mode not in ("payment", "setup", "subscription"):
        return _invalid("Missing required param: mode.", "mode")
    if not params.get("success_url"):
        return _invalid("Missing required param: success_url.", "success_url")
    items = params.get("line_items")
    if mode != "setup" and not (isinstance(items, list) and items and items[0].get("price")):
        return _invalid("Missing required param: line_items.", "line_items")
    customer = params.get("customer")
    if customer is not None:
        R.Customer._api_retrieve(customer)  # 404 for a customer Stripe does not have
    for item in items or []:
        if f"plan:{item['price']}" not in R.store:
            return _invalid(f"No such price: '{item['price']}'", "line_items[0][price]")
    session_id = "cs_test_" + secrets.token_hex(12)
    session = {"id": session_id, "object": "checkout.session", "mode": mode, "status": "open",
               "payment_status": "unpaid", "customer": customer, "customer_email": params.get("customer_email"),
               "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata") or {},
               "success_url": params["success_url"], "cancel_url": params.get("cancel_url"),
               "subscription": None, "livemode": False, "created": int(time.time()),
               "expires_at": int(time.time()) + 86400, "url": f"https://checkout.stripe.com/c/pay/{session_id}",
               "_line_items": items, "_subscription_data": params.get("subscription_data") or {}}
    SESSIONS[session_id] = session
    answer = {k: v for k, v in session.items() if not k.startswith("_")}
    _remember(key, request.path, params, answer)
    return web.json_response(answer)


def complete_checkout(session_id: str) -> web.Response:
    session = SESSIONS.get(session_id)
    if session is None:
        raise UserError(404, "Not Found")
    sub_data = session["_subscription_data"]
    customer = R.Customer._api_retrieve(session["customer"])
    if not (customer.invoice_settings or {}).get("default_payment_method"):  # the card typed on the page
        R.PaymentMethod._api_attach("pm_card_visa", customer=customer.id)
        customer.invoice_settings = {"default_payment_method": "pm_card_visa"}
    sub = R.Subscription._api_create(customer=session["customer"], metadata=sub_data.get("metadata"),
                                     items=[{"plan": session["_line_items"][0]["price"]}])
    session.update(status="complete", payment_status="paid", subscription=sub.id)
    answer = {k: v for k, v in session.items() if not k.startswith("_")}
    emit("checkout.session.completed", answer)
    return web.json_response({"session": answer, "subscription": sub._export()})


async def create_portal_session(request: web.Request) -> web.Response:
    params = await form(request)
    key = request.headers.get("Idempotency-Key")
    replay = _idempotent(key, request.path, params)
    if replay is not None:
        return web.json_response(replay)
    customer = params.get("customer")
    if not customer:
        return _invalid("Missing required param: customer.", "customer")
    if f"customer:{customer}" not in R.store:
        return _invalid(f"No such customer: '{customer}'", "customer")
    session_id = "bps_" + secrets.token_hex(12)
    answer = {"id": session_id, "object": "billing_portal.session", "customer": customer,
              "return_url": params.get("return_url"), "configuration": "bpc_" + secrets.token_hex(8),
              "created": int(time.time()), "livemode": False, "locale": params.get("locale"),
              "url": f"https://billing.stripe.com/p/session/test_{session_id}"}
    _remember(key, request.path, params, answer)
    return web.json_response(answer)


async def recorded(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        RECORDED.clear()
        return web.Response()
    return web.json_response(RECORDED)


async def fail(request: web.Request) -> web.Response:
    body = await request.json()
    FAILURES.append({"times": 1, "type": "api_error", "message": "injected", **body})
    return web.Response()


async def reset(request: web.Request) -> web.Response:
    """Everything back to empty: objects, webhooks, recorded requests, failures, sessions."""
    R.store.clear()
    W._webhooks.clear()
    for kept in (RECORDED, FAILURES):
        kept.clear()
    SESSIONS.clear()
    IDEMPOTENT.clear()
    return web.Response()


ROUTES = {("GET", "/v1/events"): list_events, ("GET", "/v1/prices"): list_prices,
          ("POST", "/v1/subscriptions"): create_subscription,
          ("POST", "/v1/checkout/sessions"): create_checkout_session,
          ("POST", "/v1/billing_portal/sessions"): create_portal_session,
          ("GET", "/_fake/requests"): recorded, ("DELETE", "/_fake/requests"): recorded,
          ("POST", "/_fake/fail"): fail, ("POST", "/_fake/reset"): reset}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    S.app.middlewares.insert(1, bridge)  # after localstripe's error middleware, before its auth
    web.run_app(S.app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
