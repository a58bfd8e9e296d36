"""User management's settings: the in-process caches (users.caches)."""

from __future__ import annotations

import dataclasses

from vibe.variables import setting


@dataclasses.dataclass(frozen=True)
class UsersSettings:
    CONCERN = "users"

    session_cache_mb: float = setting("USER_SESSION_CACHE_MB", 10.0, "size of the cache of verified tokens and "
                                      "profiles", minimum=0.01)
    session_cache_seconds: float = setting("USER_SESSION_CACHE_SECONDS", 900.0, "how long a verified token and "
                                           "profile stay cached", minimum=0.01)
    content_cache_mb: float = setting("CONTENT_CACHE_MB", 20.0, "size of the cache of access rules and content",
                                      minimum=0.01)
    content_cache_seconds: float = setting("CONTENT_CACHE_SECONDS", 1800.0, "how long access rules and content "
                                           "stay cached", minimum=0.01)
    query_cache_mb: float = setting("QUERY_CACHE_MB", 15.0, "size of the cache of query results (analytics)",
                                    minimum=0.01)
    query_cache_seconds: float = setting("QUERY_CACHE_SECONDS", 300.0, "how long a query result stays cached",
                                         minimum=0.01)
    cache_fence_seconds: float = setting("CACHE_FENCE_SECONDS", 0.5, "how long an invalidated key may not be "
                                         "cached again", minimum=0)
