"""Who is calling, resolved once per request and cached across requests.

`identify(request)` is what the rate-limit middleware calls for every request: the bearer token
is verified once and then served from the `UserSessionCache` until it expires; the user's
profile comes from the same cache (one database round trip on a miss). A user whose profile has
the tier `admin` is an administrator, as one with `app_metadata.role = "admin"` is. The result
is stored on the request, so `vibe.auth.principal_of` and `require` see the same caller.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from vibe.keys import DB
from vibe.users.keys import SESSION, USER_SESSION_CACHE
from vibe.web.auth import ANONYMOUS, AuthError, Principal, bearer_token
from vibe.web.keys import PRINCIPAL, TOKEN_VERIFIER

BOOLEAN_COLUMNS = ("marketing_consent", "cancel_at_period_end", "needs_review")


@dataclasses.dataclass(frozen=True)
class Session:
    principal: Principal
    profile: dict[str, Any] | None  # None: anonymous, service, or a user without a profile yet

    @property
    def tier(self) -> str:
        """The rate-limit and access tier: admin, a paid tier, free, or service/anonymous."""
        if self.principal.role in ("anonymous", "service"):
            return self.principal.role
        if self.principal.is_admin:
            return "admin"
        return (self.profile or {}).get("tier") or "free"


def normalise(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A profiles row as JSON wants it (SQLite gives 0/1 for booleans)."""
    if row is None:
        return None
    row = dict(row)
    for key in BOOLEAN_COLUMNS:
        if key in row:
            row[key] = bool(row[key])
    return row


async def load_profile(app: web.Application, user_id: str) -> dict[str, Any] | None:
    """The user's profile, from the UserSessionCache or the database (then cached)."""
    cache = app[USER_SESSION_CACHE]
    cached = cache.profile(user_id)
    if cached is not None:
        return cached or None  # {} is "no profile", cached too
    loaded_at = time.monotonic()
    row = normalise(await app[DB].fetchone("SELECT * FROM profiles WHERE id = %s", (user_id,)))
    cache.put_profile(user_id, row or {}, loaded_at)
    return row


async def verify(app: web.Application, token: str) -> Principal:
    """The token's principal, verified once and cached until it expires."""
    cache = app[USER_SESSION_CACHE]
    principal = cache.principal(token)
    if principal is None:
        principal = await app[TOKEN_VERIFIER].verify(token)
        cache.put_principal(token, principal)
    return principal


async def identify(request: web.Request) -> Session:
    """The request's session. Raises AuthError for a malformed or invalid token."""
    session = request.get(SESSION)
    if session is not None:
        return session
    token = bearer_token(request.headers.get("Authorization"))
    principal = ANONYMOUS if token is None else await verify(request.app, token)
    profile = None
    if principal.user_id is not None:
        profile = await load_profile(request.app, principal.user_id)
        if profile and profile.get("tier") == "admin" and principal.role == "user":
            principal = dataclasses.replace(principal, role="admin")
    session = Session(principal, profile)
    request[SESSION] = session
    request[PRINCIPAL] = principal
    return session


async def session_of(request: web.Request) -> Session:
    """Like `identify`, but a bad token is a 401 JSON error."""
    from vibe.web.errors import ApiError

    try:
        return await identify(request)
    except AuthError as exc:
        raise ApiError(401, exc.code, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
