"""`GET /openapi.json`: an OpenAPI 3.1 document for every route the application serves.

Operations are described in `OPERATIONS` (method, path template) -> operation. The document is
built from the router itself, so a route nobody described (one a plugin added) still appears,
with a generic operation; `tests/test_openapi.py` walks the router and fails when a built-in
route has no description or a description has no route. Every operation answers errors in the
house format (`default` response: `Error`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import __version__
from .keys import HEALTH_PROBES

JSON = "application/json"


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "request_id": {"type": ["string", "null"]}, "details": {}}}}}
HEALTH = {"type": "object", "required": ["status", "version"], "properties": {
    "status": {"enum": ["healthy", "degraded", "unhealthy"]}, "version": {"type": "string"},
    "uptime_seconds": {"type": "number"}, "database": {"type": "object"}, "pool": {"type": "object"},
    "functions": {"type": "object"}, "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
    "caches": {"type": "object"}, "circuit_breakers": {"type": "object"}}}
FUNCTION_HEALTH = {"type": "object", "required": ["function", "status"], "properties": {
    "function": {"type": "string"}, "status": {"enum": ["healthy", "degraded", "unhealthy"]},
    "latency_ms": {"type": "number"}}}

BEARER = [{"bearer": []}]
COMPONENTS = {
    "schemas": {"Error": ERROR, "Health": HEALTH, "FunctionHealth": FUNCTION_HEALTH},
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "A Supabase access token (user or admin) or the service role key."},
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
    ("post", "/functions/v1/user-management"): op(
        "User management action", "users", _json({"type": "object"}),
        body={"type": "object", "required": ["action"], "additionalProperties": False, "properties": {
            "action": {"enum": ["create_profile", "get_profile", "update_profile", "update_subscription",
                                "sync_progress", "check_access", "bulk_update"]},
            "data": {"type": "object"}}},
        security=BEARER),
}


def document(app: web.Application) -> dict[str, Any]:
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
        if path == "/functions/v1/{function}/health":  # name the functions this app has
            operation = {**operation, "parameters": [{**operation["parameters"][0], "schema": {
                "type": "string", "enum": sorted(app.get(HEALTH_PROBES, {}))}}]}
        paths.setdefault(path, {})[method] = operation
    return {"openapi": "3.1.0",
            "info": {"title": "vibe", "version": __version__,
                     "description": "Billing webhooks, users, analytics and email for the Vibe Coding Bible."},
            "paths": dict(sorted(paths.items())), "components": COMPONENTS}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
