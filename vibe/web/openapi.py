"""`GET /openapi.json`: an OpenAPI 3.1 document for every route the application serves.

Operations are described in `OPERATIONS` (method, path template) -> operation. The document is
built from the router itself, so a route nobody described (one a plugin added) still appears,
with a generic operation; `tests/test_openapi.py` walks the router and fails when a built-in
route has no description or a description has no route. Every operation answers errors in the
house format (`default` response: `Error`: `{"error": {"code", "message", "request_id"}, "message"}`,
the top-level `message` for the Edge Functions' callers). Times in answers are ISO 8601 UTC
strings (`vibe.web.times.SCHEMA`). Every route also answers a CORS preflight (`OPTIONS`,
vibe/web/cors.py), which is not listed as an operation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vibe import __version__
from vibe.analytics.keys import ANALYTICS
from vibe.analytics import schemas as analytics_schemas
from vibe.analytics import segment
from vibe.analytics.queries import ROLLUPS
from vibe.billing import checkout as billing_checkout
from vibe.db.database import DatabaseUnavailable
from vibe.email import api as email_api
from vibe.email import intake as email_intake
from vibe.email.keys import EMAIL_RENDERER
from vibe.users.service import ACTIONS, vocabulary
from vibe.ops.keys import HEALTH_PROBES
from vibe.web import times

JSON = "application/json"


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "object", "required": ["code", "message"],
              "properties": {"code": {"type": "string", "description": "stable, for programs"},
                             "message": {"type": "string", "description": "for people"},
                             "request_id": {"type": ["string", "null"]}, "details": {}}},
    "message": {"type": "string", "description": "the same as error.message (the Edge Functions' shape)"}}}
HEALTH = {"type": "object", "required": ["status", "version"], "properties": {
    "status": {"enum": ["healthy", "degraded", "unhealthy"]}, "version": {"type": "string"},
    "started_at": times.SCHEMA, "uptime_seconds": {"type": "number"}, "database": {"type": "object"},
    "pool": {"type": "object"},
    "functions": {"type": "object", "description": "each function's probe; its times (keys ending in `_at`) "
                  "are ISO 8601 UTC"}, "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
    "caches": {"type": "object"}, "circuit_breakers": {"type": "object"}}}
FUNCTION_HEALTH = {"type": "object", "required": ["function", "status"], "properties": {
    "function": {"type": "string"}, "status": {"enum": ["healthy", "degraded", "unhealthy"]},
    "latency_ms": {"type": "number"}},
    "description": "what the function's probe reports; its times (keys ending in `_at`) are ISO 8601 UTC"}

BEARER = [{"bearer": []}]
COMPONENTS = {
    "schemas": {"Error": ERROR, "Health": HEALTH, "FunctionHealth": FUNCTION_HEALTH},
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "A Supabase access token (user or admin), the service role key, or the project's "
                                  "anon key (SUPABASE_ANON_KEY, or a JWT with role anon): the anon key is an "
                                  "anonymous caller, which routes that need a user answer 401 sign_in_required."},
        "anonKey": {"type": "apiKey", "in": "header", "name": "apikey",
                    "description": "The anon key, as supabase-js sends it beside Authorization: an anonymous "
                                   "caller on its own."},
        "dashboardPassword": {"type": "http", "scheme": "basic", "description": "DASHBOARD_PASSWORD, any user name."},
        "stripeSignature": {"type": "apiKey", "in": "header", "name": "Stripe-Signature"},
    },
}


def op(summary: str, tag: str, ok: dict, *, body: dict | None = None, params: list | None = None,
       security: list | None = None, unhealthy: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {"200": ok,
                                                                                 "default": _json(_ref("Error"), "An error")}}
    if unhealthy:
        operation["responses"]["503"] = _json(ok["content"][JSON]["schema"], "Unhealthy")
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        operation["parameters"] = params
    if security is not None:
        operation["security"] = security
    return operation


def path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"}}


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/health"): op("Health of the service and each function", "operations",
                           _json(_ref("Health")), unhealthy=True),
    ("get", "/functions/v1/{function}/health"): op(
        "Health of one function", "operations", _json(_ref("FunctionHealth")), unhealthy=True,
        params=[path_param("function", "stripe-webhook, user-management, analytics-tracking, email-notifications")]),
    ("get", "/metrics"): op("Prometheus metrics", "operations", {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}),
    ("get", "/dashboard"): op("The operator's dashboard (HTML)", "operations", {
        "description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
        security=[{"bearer": []}, {"dashboardPassword": []}]),
    ("get", "/openapi.json"): op("This document", "operations", _json({"type": "object"})),
    ("post", "/functions/v1/stripe-webhook"): op(
        "Receive a signed Stripe event (stored before 2xx)", "billing",
        _json({"type": "object", "required": ["received", "id"], "properties": {
            "received": {"const": True}, "id": {"type": "string"}, "type": {"type": "string"},
            "duplicate": {"type": "boolean"}, "status": {"type": "string"}}}),
        body={"type": "object", "required": ["id", "type"], "properties": {
            "id": {"type": "string"}, "type": {"type": "string"}, "data": {"type": "object"}}},
        security=[{"stripeSignature": []}]),
    # (the platform's monitor probes `OPTIONS /functions/v1/stripe-webhook`: a CORS preflight, see the docstring)
    ("post", "/functions/v1/user-management"): {**op(
        "User management action", "users", _json({"type": "object"}),
        body={}, security=BEARER),  # the bodies: action_bodies(), from the action registry
        "description": "Every action needs a token: no token is 401 `unauthorized`, the anon key (nobody signed "
                       "in) 401 `sign_in_required`."},
}
OPERATIONS[("post", "/functions/v1/user-management")]["responses"]["202"] = _json(
    {"type": "object"}, "update_subscription asked Stripe (applied when Stripe's event arrives)")

# -- checkout and the billing portal (issue 16; docs/billing.md)
OPERATIONS.update({
    ("post", billing_checkout.PATH + "/checkout"): op(
        "Start a Stripe Checkout for the signed-in learner (off without STRIPE_SECRET_KEY: 503)", "billing",
        _json(billing_checkout.SESSION_ANSWER), body=billing_checkout.CHECKOUT.schema(), security=BEARER),
    ("post", billing_checkout.PATH + "/portal"): op(
        "A Stripe billing portal session for the signed-in learner", "billing",
        _json(billing_checkout.PORTAL_ANSWER), body=billing_checkout.PORTAL.schema(), security=BEARER),
})
# -- analytics (issue 4; the original function's reports and ISO 8601 times: issue 13)
A = "/functions/v1/analytics-tracking"
OBJ = _json({"type": "object"})
TIME = times.INPUT_SCHEMA
T, INT, NUM, STR, BOOL = times.SCHEMA, {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}
NSTR = {"type": ["string", "null"]}


def query(name: str, schema: dict, description: str = "", required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def obj(properties: dict, *optional: str) -> dict:
    """An object with these properties, all required but `optional`."""
    return {"type": "object", "properties": properties, "required": [k for k in properties if k not in optional]}


def items(schema: dict) -> dict:
    return {"type": "array", "items": schema}


RANGE = [query("from", TIME, "start (default: 30 days before `to`)"), query("to", TIME, "end (default: now)")]
SPAN = {"from": T, "to": T}
USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
TIME_RANGE = {"type": "string", "pattern": "^[1-9][0-9]{0,3}[hd]$",
              "description": "hours or days back from now: 24h, 7d, 30d, 90d (at most 720h or 366d)"}
USER_ID = {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"}
EVENT = {"type": "object", "properties": {"event": {"type": "string"}, "user_id": {"type": ["string", "null"]},
                                          "anonymous_id": {"type": ["string", "null"]},
                                          "properties": {"type": "object"}, "timestamp": {}}}
STORED = obj({"message_id": STR, "event": STR, "endpoint": STR, "timestamp": T, "received_at": T, "user_id": NSTR,
              "anonymous_id": NSTR, "session_id": NSTR, "properties": {"type": "object"},
              "context": {"type": "object"}, "is_bot": BOOL})
TRACKED = obj({"success": {"const": True, "description": "the original function's answer"}, "accepted": INT,
               "duplicate": INT, "rejected": INT, "results": items(obj(
                   {"index": INT, "status": {"enum": ["accepted", "duplicate", "rejected"]}, "message_id": STR,
                    "field": STR, "message": STR}, "message_id", "field", "message"))})
ANSWERS = {
    "metrics": obj({"name": STR, "interval": {"enum": ["hour", "day"]},
                    "series": items(obj({"start": T, "count": INT, "users": INT}))}),
    "business": {**obj(SPAN), "description": "revenue, MRR, subscribers, conversion (docs/analytics.md)"},
    "funnel": obj({**SPAN, "steps": items(obj({"step": STR, "users": INT}))}),
    "aggregates": obj({"kind": STR, **SPAN, "rows": items({"type": "object", "properties": {"day": T}})}),
    "journey": obj({"user_id": STR, "truncated": BOOL,
                    "sessions": items(obj({"start": T, "end": T, "events": items(STORED)}))}),
    "dashboard": obj({"data": obj({
        "overview": obj({"total_users": INT, "active_users": INT, "page_views": INT, "workshop_completions": INT}),
        "revenue": obj({"total_revenue": {**INT, "description": "net of refunds, smallest unit of `currency`"},
                        "currency": NSTR, "by_currency": items(obj({"currency": STR, "amount": INT})),
                        "subscription_conversions": INT}),
        "user_engagement": items(obj({"date": T, "active_users": INT, "events": INT, "page_views": INT,
                                      "workshop_completions": INT}))}), **SPAN, "user_id": NSTR}),
    "user-insights": obj({"data": obj({
        "profile": {"type": ["object", "null"], "properties": {"id": STR, "created_at": T, "updated_at": T,
                                                               "current_period_end": {"type": ["string", "null"]}}},
        "activity_summary": obj({"total_sessions": INT, "total_page_views": INT, "workshops_completed": INT,
                                 "achievements_earned": INT}),
        "recent_activity": items(obj({"action": NSTR, "resource_type": NSTR, "resource_id": NSTR,
                                      "timestamp": T}))})}),
    "business-metrics": obj({"data": items(obj({"metric_type": STR, "value": NUM, "dimensions": {"type": "object"},
                                                "timestamp": T})), **SPAN}),
}
OPERATIONS.update({
    ("get", A + "/metrics"): op("Event counts over time", "analytics", _json(ANSWERS["metrics"]), security=BEARER,
                                params=[query("name", {"type": "string"}, "event name (default: every event)"),
                                        query("interval", {"enum": ["hour", "day"]}), *RANGE]),
    ("get", A + "/business"): op("Business figures (revenue, subscriptions)", "analytics", _json(ANSWERS["business"]),
                                 security=BEARER, params=RANGE),
    ("get", A + "/funnel"): op("Conversion through a sequence of events", "analytics", _json(ANSWERS["funnel"]),
                               security=BEARER, params=[
        query("steps", {"type": "string", "pattern": r"^[\w.:-]{1,100}(,[\w.:-]{1,100}){1,9}$"},
              "2 to 10 event names, comma-separated (any event names are taken; the pattern shows the usual ones)",
              required=True), *RANGE]),
    ("get", A + "/aggregates/{kind}"): op("A daily rollup", "analytics", _json(ANSWERS["aggregates"]),
                                          security=BEARER, params=[
        {**path_param("kind", "the rollup"), "schema": {"enum": sorted(ROLLUPS)}}, *RANGE]),
    ("get", A + "/journey/{user_id}"): op("One user's events in order", "analytics", _json(ANSWERS["journey"]),
                                          security=BEARER, params=[
        USER, *RANGE, query("limit", {"type": "integer", "minimum": 1, "maximum": 10000})]),
    ("get", A + "/users/{user_id}/events"): op("Export a user's events (NDJSON; times ISO 8601)", "analytics", {
        "description": "one event a line", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
        security=BEARER, params=[USER]),
    ("delete", A + "/users/{user_id}"): op("Erase a user's analytics", "analytics", OBJ, security=BEARER,
                                           params=[USER]),
    ("get", A + "/dashboard"): op("The original function's dashboard (admins, the service)", "analytics",
                                  _json(ANSWERS["dashboard"]), security=BEARER, params=[
        query("timeRange", TIME_RANGE, "default 7d"), query("userId", USER_ID, "one user's figures")]),
    ("get", A + "/user-insights"): op("The original function's user insights (a user: their own)", "analytics",
                                      _json(ANSWERS["user-insights"]), security=BEARER, params=[
        query("userId", USER_ID, "default: the signed-in caller")]),
    ("get", A + "/business-metrics"): op("The original function's business metrics, per day", "analytics",
                                         _json(ANSWERS["business-metrics"]), security=BEARER, params=[
        query("timeRange", TIME_RANGE, "default 30d"),
        query("metricType", {"type": "string", "minLength": 1, "maxLength": 100}, "one metric")]),
    ("post", A + "/{endpoint}"): op("Track one event or a batch (vibe's or the original function's fields)",
                                    "analytics", _json(TRACKED), security=BEARER, params=[
        {**path_param("endpoint", "an endpoint a plugin registered"), "schema": {"type": "string"}}],
        body={"oneOf": [EVENT, {"type": "object", "required": ["batch"],
                                "properties": {"batch": {"type": "array", "items": EVENT}}}]}),
    ("post", "/v1/batch"): op("Segment-compatible batch", "analytics", OBJ, body=segment.BATCH.schema(),
                              security=[{"segmentWriteKey": []}]),
    ("post", "/v1/import"): op("Segment-compatible import (same as batch)", "analytics", OBJ,
                               body=segment.BATCH.schema(),
                               security=[{"segmentWriteKey": []}]),
    ("post", "/v1/{type}"): op("Segment-compatible single call", "analytics", OBJ, body=segment.MESSAGE.schema(),
                               security=[{"segmentWriteKey": []}], params=[{
                                   "name": "type", "in": "path", "required": True, "schema": {
                                       "enum": ["track", "page", "identify", "screen", "group", "alias"]}}]),
})
# -- email (issue 5)
E = "/functions/v1/email-notifications"
PAGE = {"description": "the page (for a browser) or JSON", "content": {
    "text/html": {"schema": {"type": "string"}}, JSON: {"schema": {"type": "object"}}}}
TOKEN = [query("token", {"type": "string"}, "the signed token from the email's link", required=True)]
_TEXT_OR_NULL = {"type": ["string", "null"]}
_TIME_OR_NULL = {**times.SCHEMA, "type": ["string", "null"]}
EMAIL_QUEUED = {"type": "object", "required": ["success", "message", "priority", "id", "status"], "properties": {
    "success": {"const": True}, "message": {"type": "string", "description": "\"Email queued for processing\", "
                                            "or \"Email not sent: <reason>\" when suppressed"},
    "priority": {"enum": list(email_intake.PRIORITIES)}, "id": {"type": "integer"},
    "status": {"type": "string"}, "type": {"type": "string", "description": "the template's own name"},
    "user_id": {"type": "string"}, "idempotency_key": {"type": "string"}, "duplicate": {"type": "boolean"},
    "reason": {"type": "string", "description": "why a suppressed message is not sent"}}}
EMAIL_STATUS = {"type": "object", "properties": {
    "id": {"type": "integer"}, "type": {"type": "string"}, "category": {"type": "string"},
    "status": {"type": "string"}, "priority": {"enum": list(email_intake.PRIORITIES)},
    "user_id": _TEXT_OR_NULL, "recipient": {"type": "string"}, "idempotency_key": {"type": "string"},
    "message_id": {"type": "string"}, "provider_id": _TEXT_OR_NULL, "attempts": {"type": "integer"},
    "last_error": _TEXT_OR_NULL, "next_attempt_at": _TIME_OR_NULL, "created_at": times.SCHEMA,
    "updated_at": times.SCHEMA, "sent_at": _TIME_OR_NULL, "data": {"type": "object"},
    "history": {"type": "array", "items": {"type": "object", "properties": {
        "status": {"type": "string"}, "detail": _TEXT_OR_NULL, "at": times.SCHEMA}}}}}
OPERATIONS.update({
    ("post", E): op("Queue an email (stored before 2xx; 200 when suppressed, 202 when queued). `type` may be "
                    "a template's alias (its body lists them: workshop_completed, achievement_unlocked); "
                    "`user_id` \"admin\" is ADMIN_EMAIL (409 admin_email_not_configured without one)", "email",
                    _json(EMAIL_QUEUED), security=BEARER, body=email_api.QUEUE.schema()),  # per template: document()
    ("post", E + "/events"): op("Delivery event from the provider (Svix-signed)", "email", OBJ,
                                body={"type": "object", "required": ["type", "data"], "properties": {
                                    "type": {"type": "string"}, "data": {"type": "object"}}},
                                security=[{"svixSignature": []}]),
    ("get", E + "/{id}"): op("One email and its history", "email", _json(EMAIL_STATUS), security=BEARER, params=[
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}]),
    ("get", E + "/unsubscribe"): op("The unsubscribe page", "email", PAGE, params=TOKEN),
    ("post", E + "/unsubscribe"): op("One-click unsubscribe (RFC 8058) or the page's choices", "email", PAGE,
                                     params=TOKEN),
})
OPERATIONS[("post", E)]["responses"]["202"] = _json(EMAIL_QUEUED, "Queued")
OPERATIONS[("post", E + "/unsubscribe")]["requestBody"] = {"content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"},
                                                "action": {"enum": ["unsubscribe", "save"]}}}}}}
COMPONENTS["securitySchemes"]["svixSignature"] = {"type": "apiKey", "in": "header", "name": "svix-signature"}
COMPONENTS["securitySchemes"]["segmentWriteKey"] = {"type": "http", "scheme": "basic",
                                                    "description": "ANALYTICS_WRITE_KEY as the user name"}


def action_bodies(vocab: dict | None = None) -> tuple[dict, dict]:
    """The user-management body, one per action of the registry (`action` tells which), and
    the component schemas it refers to."""
    schemas, refs = {}, {}
    for name, route in ACTIONS.items():
        data = route.data.schema(vocab)
        needs_data = any(f.required for f in route.data.fields.values()) or route.data.at_least_one
        schemas[f"UserAction_{name}"] = {
            "type": "object", "required": ["action", "data"] if needs_data else ["action"],
            "additionalProperties": False, "properties": {"action": {"const": name}, "data": data},
            "description": f"{route.summary} (roles: {', '.join(route.roles)})"}
        refs[name] = f"#/components/schemas/UserAction_{name}"
    body = {"oneOf": [{"$ref": r} for r in refs.values()],
            "discriminator": {"propertyName": "action", "mapping": refs}}
    return body, schemas


def _body(operation: dict, schema: dict) -> dict:
    return {**operation, "requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def document(app: web.Application, vocab: dict | None = None) -> dict[str, Any]:
    """The document for `app`; `vocab`: the choice lists known at run time (the access catalogue's
    resource types), else those fields are documented without their list."""
    users_body, schemas = action_bodies(vocab)
    bodies = {("post", "/functions/v1/user-management"): users_body}
    if ANALYTICS in app:
        bodies[("post", A + "/{endpoint}")] = analytics_schemas.body_schema(app[ANALYTICS].endpoints)
    if EMAIL_RENDERER in app:
        bodies[("post", E)] = email_api.body_schema(app[EMAIL_RENDERER].templates)
    paths: dict[str, dict] = {}
    for route in app.router.routes():
        method = route.method.lower()
        resource = route.resource
        if method == "head" or resource is None:
            continue
        path = resource.canonical
        operation = OPERATIONS.get((method, path))
        if operation is None:  # a plugin's route: listed, described as far as we know it
            operation = op(f"{route.method} {path} (added by a plugin)", "plugins", _json({}))
            names = [p.strip("{}").split(":")[0] for p in path.split("/") if p.startswith("{")]
            if names:
                operation["parameters"] = [path_param(n, n) for n in names]
        names = {"/functions/v1/{function}/health": app.get(HEALTH_PROBES, {}),  # what this app has
                 A + "/{endpoint}": app[ANALYTICS].endpoints if ANALYTICS in app else {}}.get(path)
        if names is not None:
            operation = {**operation, "parameters": [{**operation["parameters"][0], "schema": {
                "type": "string", "enum": sorted(names)}}]}
        if (method, path) in bodies:
            operation = _body(operation, bodies[(method, path)])
        paths.setdefault(path, {})[method] = operation
    return {"openapi": "3.1.0",
            "info": {"title": "vibe", "version": __version__,
                     "description": "Billing webhooks, users, analytics and email for the Vibe Coding Bible."},
            "paths": dict(sorted(paths.items())),
            "components": {**COMPONENTS, "schemas": {**COMPONENTS["schemas"], **schemas}}}


async def openapi(request: web.Request) -> web.Response:
    try:
        vocab = await vocabulary(request.app)
    except DatabaseUnavailable:  # the document still answers; the catalogue's lists are left out
        vocab = None
    return web.json_response(document(request.app, vocab))


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
