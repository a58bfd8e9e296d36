"""User management's state: its three caches, and the caller's session on a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.users.caches import ContentCache, DatabaseQueryCache, UserSessionCache  # noqa: F401
    from vibe.users.sessions import Session  # noqa: F401

USER_SESSION_CACHE = web.AppKey("user_session_cache", "UserSessionCache")
CONTENT_CACHE = web.AppKey("content_cache", "ContentCache")
QUERY_CACHE = web.AppKey("query_cache", "DatabaseQueryCache")
# The caller's profile as the rate-limit middleware resolved it (None: no profile yet).
SESSION = web.RequestKey("session", "Session")
