"""Analytics' state: the ingestion pipeline, its endpoints and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.analytics.ingest import AnalyticsState  # noqa: F401

ANALYTICS = web.AppKey("analytics", "AnalyticsState")
