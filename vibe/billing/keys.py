"""Billing's state: the Stripe handlers, the inbox's group committer, the dispatcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.billing.dispatcher import Dispatcher  # noqa: F401
    from vibe.billing.registry import Handler
    from vibe.db.groupcommit import GroupCommitter  # noqa: F401

STRIPE_HANDLERS = web.AppKey("stripe_handlers", dict[str, "Handler"])
STRIPE_INBOX = web.AppKey("stripe_inbox", "GroupCommitter")
DISPATCHER = web.AppKey("dispatcher", "Dispatcher")
