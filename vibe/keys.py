"""The application state every package shares, as typed `web.AppKey`s: the settings, the
database, the plugin manager, the shutdown deadline, the outgoing HTTP session, the request id.

Each package declares the keys of the state it owns in its own `keys.py` (`vibe.billing.keys`,
`vibe.users.keys`, ...); nothing is stored on the app under a plain string.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pluggy
from aiohttp import web

from vibe.config import Settings
from vibe.db.database import Database

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.web.shutdown import Shutdown  # noqa: F401

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
PLUGINS = web.AppKey("plugins", pluggy.PluginManager)
STARTED_AT = web.AppKey("started_at", float)
SHUTDOWN = web.AppKey("shutdown", "Shutdown")  # the deadline the resources share as they stop
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)

# Per-request state.
REQUEST_ID = web.RequestKey("request_id", str)
