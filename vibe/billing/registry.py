"""Checks what the plugins returned from `register_stripe_handlers` (collected by the plugin host).

The event types Stripe can send are read from the stripe library (the `enabled_events` values
a webhook endpoint accepts), so a typo such as `invoice.paid_succeeded` fails at start-up
instead of silently never matching. STRIPE_EXTRA_EVENT_TYPES admits types newer than the
installed library.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Awaitable, Callable

import stripe

from vibe.config import Settings
from vibe.plugins.host import PluginError, PluginManager

Handler = Callable[[Any], Awaitable[Any]]


@functools.lru_cache(maxsize=1)
def known_event_types() -> frozenset[str]:
    annotation = stripe.params.WebhookEndpointCreateParams.__annotations__["enabled_events"]
    (literal,) = typing.get_args(annotation)
    return frozenset(t for t in typing.get_args(literal) if t != "*")


def collect_stripe_handlers(pm: PluginManager, settings: Settings) -> dict[str, Handler]:
    """The handlers the plugins registered (collected by the plugin host), checked: a known
    event type each, async, and no type handled twice."""
    known = known_event_types() | set(settings.billing.extra_event_types)
    handlers: dict[str, Handler] = {}
    owners: dict[str, str] = {}
    for plugin, registered in pm.registered["register_stripe_handlers"]:
        if not registered:
            continue
        if not isinstance(registered, dict):
            raise PluginError(f"plugin {plugin}: register_stripe_handlers must return a dict")
        for event_type, handler in registered.items():
            if event_type not in known:
                raise PluginError(
                    f"plugin {plugin}: unknown Stripe event type {event_type!r} "
                    "(add it to STRIPE_EXTRA_EVENT_TYPES if Stripe added it after this stripe library)"
                )
            if event_type in handlers:
                raise PluginError(
                    f"Stripe event type {event_type!r} is handled twice: by plugins "
                    f"{owners[event_type]} and {plugin}"
                )
            if not inspect.iscoroutinefunction(handler):
                raise PluginError(f"plugin {plugin}: handler for {event_type} must be async def")
            handlers[event_type] = handler
            owners[event_type] = plugin
    return handlers
