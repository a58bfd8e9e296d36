"""Who is calling, resolved once per request and cached across requests.

`identify(request)` is what the rate-limit middleware calls for every request: the bearer token
is verified once and then served from the `UserSessionCache` until it expires; the user's
profile comes from the same cache (one database round trip on a miss). A user whose profile has
the tier `admin` is an administrator, as one with `app_metadata.role = "admin"` is. The result
is stored on the request, so `vibe.auth.principal_of` and `require` see the same caller.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from aiohttp import web

from vibe.keys import DB
from vibe.users.keys import SESSION, USER_SESSION_CACHE
from vibe.web.auth import ANONYMOUS, AuthError, Principal, bearer_token
from vibe.web.keys import PRINCIPAL, TOKEN_VERIFIER
from vibe.web.times import with_iso

BOOLEAN_COLUMNS = ("marketing_consent", "cancel_at_period_end", "needs_review")
# The platform's per-kind mail switches (`profiles.notification_preferences`, docs/users.md); an
# email template names the one that switches it off (its `preference`, vibe/email/recipients.py).
NOTIFICATION_KEYS = ("welcome_emails", "payment_emails", "achievement_emails", "billing_emails",
                     "progress_emails", "referral_emails")


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
    """A profiles row as JSON wants it (SQLite gives 0/1 for booleans; the stored
    notification_preferences text is every key with its value, true unless set to false)."""
    if row is None:
        return None
    row = dict(row)
    for key in BOOLEAN_COLUMNS:
        if key in row:
            row[key] = bool(row[key])
    if "notification_preferences" in row:
        row["notification_preferences"] = preferences(row["notification_preferences"])
    return row


def preferences(stored: Any) -> dict[str, bool]:
    """The stored notification_preferences (JSON text of the keys set) as every key with its
    value: true unless set to false."""
    chosen = stored if isinstance(stored, dict) else json.loads(stored) if stored else {}
    return {key: chosen.get(key) is not False for key in NOTIFICATION_KEYS}


PROFILE_TIMES = ("created_at", "updated_at", "current_period_end")


def public_profile(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    """A (normalised) profile as an HTTP answer gives it: its times as ISO 8601 (vibe.web.times)."""
    return None if profile is None else with_iso(profile, *PROFILE_TIMES)


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
