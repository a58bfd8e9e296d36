"""`POST /functions/v1/user-management`: `{"action": ..., "data": {...}}` routed to its action.

Order of checks, cheapest and least revealing first: the body is a JSON object; the action is
known (else 400 listing the valid ones); the caller is signed in (401) and has a role the action
allows (403) -- all before the action reads its data or the database. Then the action validates
its `data`, naming every wrong field.

`setup(app)` also creates the three caches, registers the cache-invalidation hooks, and starts
the PostgreSQL listener that carries evictions between instances.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vibe.keys import DB, PLUGINS, SETTINGS
from vibe.ops import health
from vibe.users import access, progress
from vibe.users import actions as user_actions
from vibe.users.cache_sync import CacheInvalidation, listener_ctx
from vibe.users.caches import ContentCache, DatabaseQueryCache, UserSessionCache
from vibe.users.keys import CONTENT_CACHE, QUERY_CACHE, USER_SESSION_CACHE
from vibe.users.sessions import Session, session_of
from vibe.web import ratelimit
from vibe.web.auth import sign_in_error
from vibe.web.errors import ApiError
from vibe.web.json_body import load_json
from vibe.web.keys import LOAD_MONITOR
from vibe.web.validation import Field, Shape

PATH = "/functions/v1/user-management"
MB = 1024 * 1024

Action = Callable[[web.Application, Session, Any], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Route:
    """An action: who may call it, what runs, and the shape of its `data` (which it checks, and
    which /openapi.json shows as one of the bodies of this route)."""

    roles: tuple[str, ...]
    run: Action
    data: Shape
    summary: str = ""


async def _get_profile(app, session, data):
    cat = await access.catalogue(app)
    return await user_actions.get_profile(app, session, data, lambda uid: progress.overview(app, uid, cat))


async def _sync_progress(app, session, data):
    return await progress.sync(app, session.principal.user_id, data, await access.catalogue(app))


async def _check_access(app, session, data):
    cat = await access.catalogue(app)
    clean = ACCESS.check(data, vocab={"resource_types": cat.types})
    decision = access.decide(cat, session.profile, is_admin=session.principal.is_admin, **clean)
    if decision is None:
        raise ApiError(404, "resource_not_found",
                       f"No {clean['resource_type']} has the id {clean['resource_id']!r}.")
    return {"resource_type": clean["resource_type"], "resource_id": clean["resource_id"], **decision}


ACCESS = Shape({"resource_type": Field("str", required=True, choices="resource_types",
                                       description="a resource type of the access catalogue"),
                 "resource_id": Field("str", required=True, max_length=64)})

ACTIONS: dict[str, Route] = {
    "create_profile": Route(("user", "admin"), user_actions.create_profile, user_actions.CREATE,
                            "Create the caller's profile (onboarding)"),
    "get_profile": Route(("user", "admin", "service"), _get_profile, user_actions.READ,
                         "A profile and its progress overview"),
    "update_profile": Route(("user", "admin"), user_actions.update_profile, user_actions.UPDATE,
                            "Change the caller's own profile fields"),
    "update_subscription": Route(("admin", "service"), user_actions.update_subscription,
                                 user_actions.CHANGE_SUBSCRIPTION, "Set a user's tier by hand (audited); with "
                                 "STRIPE_SECRET_KEY and a Stripe subscription, ask Stripe (202)"),
    "sync_progress": Route(("user", "admin"), _sync_progress, progress.SYNC, "Record learning progress"),
    "check_access": Route(("user", "admin"), _check_access, ACCESS, "May the caller open this item?"),
    "bulk_update": Route(("admin", "service"), user_actions.bulk_update, user_actions.BULK,
                         "Up to 1,000 profile and tier changes"),
}


async def vocabulary(app: web.Application) -> dict[str, tuple[str, ...]]:
    """The choice lists the actions' shapes name, as this app knows them now (for /openapi.json)."""
    return {"resource_types": (await access.catalogue(app)).types}


async def user_management(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    body = load_json(await request.read())  # 400 invalid_json, or too_deep past MAX_DEPTH (32)
    if not isinstance(body, dict) or set(body) - {"action", "data"}:
        raise ApiError(400, "invalid_body", 'The body must be {"action": ..., "data": {...}}.')
    route = ACTIONS.get(body.get("action")) if isinstance(body.get("action"), str) else None
    if route is None:
        raise ApiError(400, "unknown_action", f"Unknown action; valid actions are: {', '.join(ACTIONS)}.",
                       details={"valid_actions": list(ACTIONS)})
    session = await session_of(request)
    role = session.principal.role
    if role == "anonymous":
        raise sign_in_error(request)  # 401: sign in (the anon key), or send a token
    if role not in route.roles:
        raise ApiError(403, "forbidden", f"The action {body['action']} needs the role {' or '.join(route.roles)}.")
    data = body.get("data", {})
    result = await route.run(request.app, session, data)
    return result if isinstance(result, web.StreamResponse) else web.json_response(result)


async def users_probe(app: web.Application) -> dict[str, Any]:
    """The profiles table answers; under load the rate limits shrink (degraded)."""
    await app[DB].fetchall("SELECT id FROM profiles LIMIT 1")
    level = app[LOAD_MONITOR].level
    out: dict[str, Any] = {"status": "degraded" if level else "healthy", "load_level": level,
                           "caches": health.cache_ratios(app)}
    if level:
        out["error"] = f"overloaded (level {level}): rate limits are shrunk"
    return out


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    fence = settings.users.cache_fence_seconds
    app[USER_SESSION_CACHE] = UserSessionCache("user_session", int(settings.users.session_cache_mb * MB),
                                               settings.users.session_cache_seconds, fence_seconds=fence)
    app[CONTENT_CACHE] = ContentCache("content", int(settings.users.content_cache_mb * MB),
                                      settings.users.content_cache_seconds, fence_seconds=fence)
    app[QUERY_CACHE] = DatabaseQueryCache("database_query", int(settings.users.query_cache_mb * MB),
                                          settings.users.query_cache_seconds, fence_seconds=fence)
    for key in (USER_SESSION_CACHE, CONTENT_CACHE, QUERY_CACHE):
        health.register_cache(app, app[key])
    health.register(app, "user-management", users_probe)
    invalidation = CacheInvalidation(app)
    pm = app[PLUGINS]
    if pm.has_plugin(CacheInvalidation.NAME):  # a plugin manager reused for a second app: this app's caches win
        pm.unregister(name=CacheInvalidation.NAME)
    pm.register(invalidation, name=CacheInvalidation.NAME)
    app.cleanup_ctx.append(listener_ctx(invalidation))
    ratelimit.setup(app)
    app.router.add_post(PATH, user_management)
