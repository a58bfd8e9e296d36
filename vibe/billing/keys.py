"""Billing's state: the Stripe handlers, the inbox's group committer, the dispatcher, the Stripe API
client and the catch-up loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.billing.catchup import CatchUp  # noqa: F401
    from vibe.billing.dispatcher import Dispatcher  # noqa: F401
    from vibe.billing.registry import Handler
    from vibe.billing.stripe_api import StripeApi  # noqa: F401
    from vibe.db.groupcommit import GroupCommitter  # noqa: F401

STRIPE_HANDLERS = web.AppKey("stripe_handlers", dict[str, "Handler"])
STRIPE_INBOX = web.AppKey("stripe_inbox", "GroupCommitter")
DISPATCHER = web.AppKey("dispatcher", "Dispatcher")
STRIPE_API = web.AppKey("stripe_api", "StripeApi")  # only when STRIPE_SECRET_KEY is set
CATCHUP = web.AppKey("stripe_catchup", "CatchUp")
