"""Who may open what: the access rules are data (sql/010_users.sql), held in the ContentCache.

The catalogue is one cached entry: every `(resource_type, resource_id) -> required tier`, the
tiers' ranks, and which subscription statuses keep a paid tier (and for how long after the
period ends: `past_due` keeps it for a grace period). A `check_access` is then a cache hit for
the session, one for the catalogue, and a dictionary look-up.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from vibe.keys import DB
from vibe.users.keys import CONTENT_CACHE

CATALOGUE_KEY = ("access", "catalogue")


@dataclasses.dataclass(frozen=True)
class Catalogue:
    rules: dict[tuple[str, str], str]  # (type, id) -> required tier
    ranks: dict[str, int]  # tier -> rank
    statuses: dict[str, int | None]  # status that keeps the tier -> grace seconds after period end (None: no end)
    counts: dict[str, int]  # type -> number of items

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted(self.counts))


async def catalogue(app: web.Application) -> Catalogue:
    cache = app[CONTENT_CACHE]
    cat = cache.get(CATALOGUE_KEY)
    if cat is None:
        loaded_at = time.monotonic()
        db = app[DB]
        rules = {(r["resource_type"], r["resource_id"]): r["required_tier"]
                 for r in await db.fetchall("SELECT resource_type, resource_id, required_tier FROM access_rules")}
        ranks = {r["tier"]: int(r["rank"]) for r in await db.fetchall("SELECT tier, rank FROM access_tiers")}
        statuses = {r["status"]: (None if r["grace_seconds"] is None else int(r["grace_seconds"]))
                    for r in await db.fetchall("SELECT status, grace_seconds FROM access_status_rules")}
        counts: dict[str, int] = {}
        for kind, _ in rules:
            counts[kind] = counts.get(kind, 0) + 1
        cat = Catalogue(rules, ranks, statuses, counts)
        cache.set(CATALOGUE_KEY, cat, loaded_at=loaded_at)
    return cat


def effective_tier(profile: dict[str, Any] | None, cat: Catalogue, now: float) -> tuple[str, str | None]:
    """The tier the user's subscription opens now, and a note (`grace_period`, `subscription_<status>`)."""
    tier = (profile or {}).get("tier") or "free"
    if tier in ("free", "admin") or tier not in cat.ranks:
        return (tier if tier in cat.ranks else "free"), None
    status = profile.get("subscription_status")
    if status is None:  # a tier set by hand, with no Stripe subscription behind it
        return tier, None
    if status not in cat.statuses:
        return "free", f"subscription_{status}"
    grace = cat.statuses[status]
    if grace is None:
        return tier, None
    end = profile.get("current_period_end")
    if end is not None and now <= float(end) + grace:
        return tier, "grace_period"
    return "free", "grace_period_over"


def decide(cat: Catalogue, profile: dict[str, Any] | None, *, is_admin: bool, resource_type: str,
           resource_id: str, now: float | None = None) -> dict[str, Any] | None:
    """`{allowed, reason, required_tier, user_tier}`, or None for an item not in the catalogue."""
    required = cat.rules.get((resource_type, resource_id))
    if required is None:
        return None
    if is_admin:
        return {"allowed": True, "reason": "admin", "required_tier": required, "user_tier": "admin"}
    tier, note = effective_tier(profile, cat, time.time() if now is None else now)
    allowed = cat.ranks.get(tier, 0) >= cat.ranks.get(required, 0)
    if allowed:
        reason = "free_item" if cat.ranks.get(required, 0) == 0 else (note or "tier_includes_item")
    else:
        reason = note if note and note != "grace_period" else "upgrade_required"
    return {"allowed": allowed, "reason": reason, "required_tier": required, "user_tier": tier}
