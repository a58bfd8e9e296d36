"""`POST /functions/v1/stripe-webhook`: reject cheaply, verify, store, answer; process later.

Order matters (see docs/webhooks.md): size and header checks before reading the body, the HMAC
before parsing it, and the answer only after the event's row is committed. Processing happens in
the dispatcher right after, so a slow handler never makes Stripe time out and retry.
"""

from __future__ import annotations

from aiohttp import web

from vibe.billing import signature as stripe_signature
from vibe.billing.inbox import parse_event
from vibe.billing.keys import DISPATCHER, STRIPE_INBOX
from vibe.keys import SETTINGS
from vibe.web.errors import ApiError

MAX_BODY = 1024 * 1024


async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {MAX_BODY} bytes.")
    header = request.headers.get("Stripe-Signature")
    try:
        stripe_signature.parse_header(header)
    except stripe_signature.SignatureError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    body = await request.read()
    if len(body) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {MAX_BODY} bytes.")
    try:
        stripe_signature.verify(body, header, settings.billing.webhook_secrets, settings.billing.webhook_tolerance)
    except stripe_signature.SignatureError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    event = parse_event(body, settings)
    result = await request.app[STRIPE_INBOX].submit(event)
    if not result.duplicate and event.status == "pending":
        request.app[DISPATCHER].wake(event.body)  # parsed here: the dispatcher need not parse it again
    return web.json_response(
        {"received": True, "id": event.id, "type": event.type, "duplicate": result.duplicate,
         "status": result.status}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/functions/v1/stripe-webhook", stripe_webhook)
