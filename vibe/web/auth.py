"""Who is calling: Supabase Auth access tokens, verified with PyJWT.

* HS256 tokens are checked with SUPABASE_JWT_SECRET (Supabase's legacy shared secret).
* ES256, RS256 and EdDSA tokens are checked with the project's JWKS (SUPABASE_JWKS_URL, by
  default `$SUPABASE_URL/auth/v1/.well-known/jwks.json`): fetched with a timeout, cached,
  refetched (at most every JWKS_MIN_REFRESH seconds) when a token names an unknown `kid`, and
  served from the cache while the JWKS host is down.
* Refused: `alg: none`; an algorithm that is not one of those four; an HMAC token whose header
  names a JWKS key id; a token whose algorithm does not match the type (or the `alg`) of the
  key it names.

Claims: `exp` is required; `exp`, `nbf` and `iat` get JWT_LEEWAY_SECONDS of leeway; user tokens
(`role: authenticated`) must have `aud: authenticated`, a `sub`, and, when JWT_ISSUER is set,
that issuer. `role: service_role` tokens (SUPABASE_SERVICE_ROLE_KEY) carry no aud or sub, and
Supabase gives them the issuer `supabase` whatever the project's: JWT_ISSUER does not apply.

The anon key: what supabase-js sends when nobody is signed in (`Authorization: Bearer <anon
key>` and `apikey: <anon key>`) is an anonymous caller, not a broken user token. That is a bearer
token equal to SUPABASE_ANON_KEY (compared in constant time; a JWT with `role: anon` or an opaque
`sb_publishable_…` key), any valid JWT with `role: anon`, and an `apikey` header without
`Authorization`. An `sb_publishable_…` token that is not the configured key is refused (401).
`require` answers an anonymous caller 401: `sign_in_required` when it sent the anon key,
`unauthorized` when it sent nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from typing import Any, Mapping

import aiohttp
import jwt

from vibe.config import Settings

log = logging.getLogger(__name__)

ASYMMETRIC = {"ES256": "EC", "RS256": "RSA", "EdDSA": "OKP"}
HMAC = ("HS256",)
PUBLISHABLE = "sb_publishable_"  # Supabase's opaque anon keys


class AuthError(Exception):
    """The token is missing or not acceptable (answered 401)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Principal:
    """The verified caller. `role` is `user`, `admin`, `service` or `anonymous`."""

    role: str
    user_id: str | None = None
    email: str | None = None
    claims: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    expires_at: float | None = None

    @property
    def is_service(self) -> bool:
        return self.role == "service"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_privileged(self) -> bool:
        """Admin or the service itself."""
        return self.role in ("admin", "service")


ANONYMOUS = Principal(role="anonymous")


class JwksCache:
    """The JWKS keys by `kid`, refreshed on demand and kept through outages of the host."""

    def __init__(self, url: str, session_factory, *, ttl: float = 600.0, timeout: float = 5.0,
                 min_refresh: float = 30.0):
        self.url = url
        self._session = session_factory
        self.ttl = ttl
        self.timeout = timeout
        self.min_refresh = min_refresh
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = 0.0
        self._last_attempt = 0.0
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self.fetched_at > self.ttl
        if (kid not in self.keys or stale) and now - self._last_attempt >= self._gap():
            await self.refresh()
        return self.keys.get(kid)

    def _gap(self) -> float:
        """Seconds between fetches: JWKS_MIN_REFRESH_SECONDS, at most 1 s while no key is known
        (the first fetch failed), so a host that is down is not waited on by every request."""
        return self.min_refresh if self.keys else min(self.min_refresh, 1.0)

    def has(self, kid: str | None) -> bool:
        return bool(kid) and kid in self.keys

    async def refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._last_attempt and now - self._last_attempt < self._gap():
                return  # someone else just fetched (or failed to) while we waited for the lock
            self._last_attempt = now
            try:
                timeout = aiohttp.ClientTimeout(total=self.timeout)
                async with self._session().get(self.url, timeout=timeout) as resp:
                    resp.raise_for_status()
                    document = await resp.json(content_type=None)
                keys = {}
                for entry in document.get("keys", []):
                    try:
                        key = jwt.PyJWK.from_dict(entry)
                    except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError) as exc:
                        log.warning("JWKS %s: skipping a key: %s", self.url, exc)
                        continue
                    if key.key_id:
                        keys[key.key_id] = key
                self.keys, self.fetched_at = keys, time.monotonic()
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError) as exc:
                log.warning("JWKS %s unreachable (%s); using %d cached keys", self.url, exc, len(self.keys))


class TokenVerifier:
    def __init__(self, settings: Settings, jwks: JwksCache | None):
        self.secret = settings.web.supabase_jwt_secret
        self.issuer = settings.web.jwt_issuer or None
        self.leeway = settings.web.jwt_leeway_seconds
        self.anon_key = settings.web.supabase_anon_key.encode()
        self.jwks = jwks

    async def verify(self, token: str) -> Principal:
        if self.anon_key and hmac.compare_digest(token.encode(), self.anon_key):
            return ANONYMOUS
        if token.startswith(PUBLISHABLE):
            raise AuthError("invalid_token", "This publishable key is not the project's anon key (SUPABASE_ANON_KEY).")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "The bearer token is not a JWT.") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg in HMAC:
            if self.jwks is not None and kid and (self.jwks.has(kid) or await self.jwks.get(kid)):
                raise AuthError("invalid_token", "An HMAC token may not name an asymmetric key id.")
            if not self.secret:
                raise AuthError("invalid_token", "HS256 tokens are not accepted (no SUPABASE_JWT_SECRET).")
            key: Any = self.secret
        elif alg in ASYMMETRIC:
            if self.jwks is None or not kid:
                raise AuthError("invalid_token", "The token names no key this service knows.")
            jwk = await self.jwks.get(kid)
            if jwk is None:
                raise AuthError("invalid_token", "The token's key id is not in the JWKS.")
            if jwk.key_type != ASYMMETRIC[alg] or (jwk.algorithm_name and jwk.algorithm_name != alg):
                raise AuthError("invalid_token", "The token's algorithm does not match its key.")
            key = jwk.key
        else:
            raise AuthError("invalid_token", f"Tokens signed with {alg!r} are refused.")
        return self._principal(self._decode(token, key, alg))

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("invalid_token", "The token is not valid yet.") from None
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"The token is not valid: {exc}.") from None
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, (int, float)) or iat > time.time() + self.leeway):
            raise AuthError("invalid_token", "The token was issued in the future.")
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        role = claims.get("role")
        expires = float(claims["exp"])
        if role == "service_role":
            return Principal(role="service", claims=claims, expires_at=expires)
        if role == "authenticated":
            if self.issuer and claims.get("iss") != self.issuer:
                raise AuthError("invalid_token", "The token's issuer is not accepted.")
            aud = claims.get("aud")
            if aud != "authenticated" and not (isinstance(aud, list) and "authenticated" in aud):
                raise AuthError("invalid_token", "The token's audience is not 'authenticated'.")
            sub = claims.get("sub")
            if not isinstance(sub, str) or not 0 < len(sub) <= 128:
                raise AuthError("invalid_token", "The token has no subject.")
            app_meta = claims.get("app_metadata") or {}
            is_admin = isinstance(app_meta, dict) and app_meta.get("role") == "admin"
            return Principal(role="admin" if is_admin else "user", user_id=sub, email=claims.get("email"),
                             claims=claims, expires_at=expires)
        if role == "anon":
            return ANONYMOUS
        raise AuthError("invalid_token", "The token's role is not accepted.")


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("invalid_authorization", "The Authorization header must be 'Bearer <token>'.")
    return token.strip()


async def principal_of(request) -> Principal:
    """The request's verified caller (ANONYMOUS without a token, with only an `apikey` header, or
    with the anon key); 401 for a bad token."""
    from vibe.web.errors import ApiError
    from vibe.web.keys import PRINCIPAL, TOKEN_VERIFIER

    cached = request.get(PRINCIPAL)
    if cached is not None:
        return cached
    try:
        token = bearer_token(request.headers.get("Authorization"))
        principal = ANONYMOUS if token is None else await request.app[TOKEN_VERIFIER].verify(token)
    except AuthError as exc:
        raise ApiError(401, exc.code, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    request[PRINCIPAL] = principal
    return principal


def sign_in_error(request):
    """The 401 for an anonymous caller: `sign_in_required` when it sent the anon key (a browser
    nobody is signed in to), `unauthorized` when it sent no token at all."""
    from vibe.web.errors import ApiError

    if request.headers.get("Authorization") or request.headers.get("apikey"):
        return ApiError(401, "sign_in_required", "Sign in: this needs a signed-in user's access token, not the "
                        "anon key.", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return ApiError(401, "unauthorized", "A bearer token is required: send 'Authorization: Bearer <access token>'.",
                    headers={"WWW-Authenticate": "Bearer"})


async def require(request, *roles: str) -> Principal:
    """The caller, who must have one of `roles` (`user`, `admin`, `service`): else 401 or 403."""
    from vibe.web.errors import ApiError

    principal = await principal_of(request)
    if principal.role == "anonymous":
        raise sign_in_error(request)
    if roles and principal.role not in roles:
        raise ApiError(403, "forbidden", f"This needs the role {' or '.join(roles)}.")
    return principal
