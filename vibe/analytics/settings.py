"""Analytics' settings: the write key, batching, retention, refreshes and the read cache."""

from __future__ import annotations

import dataclasses

from vibe.variables import setting


@dataclasses.dataclass(frozen=True)
class AnalyticsSettings:
    CONCERN = "analytics"

    write_key: str = setting("ANALYTICS_WRITE_KEY", "", "key for servers and Segment SDKs (`X-Write-Key`, "
                             "Basic-auth user or `writeKey`)", secret=True)
    batch_events: int = setting("ANALYTICS_BATCH_EVENTS", 100, "events per group-commit transaction (a request "
                                "is never split)", minimum=1)
    batch_wait_ms: float = setting("ANALYTICS_BATCH_WAIT_MS", 2.0, "how long a transaction waits for company",
                                   minimum=0)
    commit_concurrency: int = setting("ANALYTICS_COMMIT_CONCURRENCY", 0, "transactions written at once",
                                      minimum=0, default_text="4 (PostgreSQL), 1 (SQLite)")
    max_queue: int = setting("ANALYTICS_MAX_QUEUE", 20000, "events waiting to be stored beyond which requests get "
                             "503 + `Retry-After`", minimum=1)
    retention_days: int = setting("ANALYTICS_RETENTION_DAYS", 395, "raw events older than this are deleted "
                                  "(aggregates stay; 0 keeps all)", minimum=0)
    retention_interval: float = setting("ANALYTICS_RETENTION_INTERVAL", 3600.0, "seconds between retention runs",
                                        minimum=1.0)
    refresh_seconds: float = setting("ANALYTICS_REFRESH_SECONDS", 300.0, "PostgreSQL: seconds between refreshes "
                                     "of the business views", minimum=1.0)
    cache_ttl: float = setting("ANALYTICS_CACHE_TTL", 60.0, "seconds a read answer may be cached (0: never)",
                               minimum=0)
    erasure_poll_seconds: float = setting("ANALYTICS_ERASURE_POLL_SECONDS", 1.0, "how often each instance checks "
                                          "for erasures made elsewhere", minimum=0.05)
