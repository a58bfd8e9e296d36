"""Tokens minted the way Supabase Auth mints them, for tests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
ES256_KID = "test-es256-key"
_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def user_claims(user_id: str | None = None, *, email: str | None = None, admin: bool = False,
                ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    user_id = user_id or str(uuid.uuid4())
    claims = {
        "aud": "authenticated", "exp": now + ttl, "iat": now, "sub": user_id,
        "email": email or f"{user_id[:8]}@example.com", "phone": "", "role": "authenticated",
        "aal": "aal1", "session_id": str(uuid.uuid4()), "is_anonymous": False,
        "app_metadata": {"provider": "email", "providers": ["email"], **({"role": "admin"} if admin else {})},
        "user_metadata": {"full_name": "Test Learner"},
    }
    claims.update(extra)
    return claims


def hs256(claims: dict[str, Any], secret: str = JWT_SECRET, headers: dict | None = None) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def es256(claims: dict[str, Any], kid: str = ES256_KID, key=None) -> str:
    return jwt.encode(claims, key or _EC_KEY, algorithm="ES256", headers={"kid": kid})


def user_token(user_id: str | None = None, **kw: Any) -> str:
    return hs256(user_claims(user_id, **kw))


def admin_token(user_id: str | None = None, **kw: Any) -> str:
    return hs256(user_claims(user_id, admin=True, **kw))


def service_token() -> str:
    """What SUPABASE_SERVICE_ROLE_KEY holds: role service_role, no aud, no sub."""
    now = int(time.time())
    return hs256({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 10 * 365 * 86400})


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwks_document() -> dict[str, Any]:
    public = jwt.algorithms.ECAlgorithm.to_jwk(_EC_KEY.public_key(), as_dict=True)
    public.update(kid=ES256_KID, alg="ES256", use="sig")
    return {"keys": [public]}
