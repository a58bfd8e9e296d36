"""Collects `register_stripe_handlers` once at start-up and checks what it got.

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

import pluggy
import stripe

from vibe.config import Settings
from vibe.plugins.host import PluginError

Handler = Callable[[Any], Awaitable[Any]]


@functools.lru_cache(maxsize=1)
def known_event_types() -> frozenset[str]:
    annotation = stripe.params.WebhookEndpointCreateParams.__annotations__["enabled_events"]
    (literal,) = typing.get_args(annotation)
    return frozenset(t for t in typing.get_args(literal) if t != "*")


def collect_stripe_handlers(pm: pluggy.PluginManager, settings: Settings) -> dict[str, Handler]:
    known = known_event_types() | set(settings.stripe_extra_event_types)
    handlers: dict[str, Handler] = {}
    owners: dict[str, str] = {}
    args = {"settings": settings}
    for impl in reversed(pm.hook.register_stripe_handlers.get_hookimpls()):
        registered = impl.function(**{name: args[name] for name in impl.argnames})
        if not registered:
            continue
        if not isinstance(registered, dict):
            raise PluginError(f"plugin {impl.plugin_name}: register_stripe_handlers must return a dict")
        for event_type, handler in registered.items():
            if event_type not in known:
                raise PluginError(
                    f"plugin {impl.plugin_name}: unknown Stripe event type {event_type!r} "
                    "(add it to STRIPE_EXTRA_EVENT_TYPES if Stripe added it after this stripe library)"
                )
            if event_type in handlers:
                raise PluginError(
                    f"Stripe event type {event_type!r} is handled twice: by plugins "
                    f"{owners[event_type]} and {impl.plugin_name}"
                )
            if not inspect.iscoroutinefunction(handler):
                raise PluginError(f"plugin {impl.plugin_name}: handler for {event_type} must be async def")
            handlers[event_type] = handler
            owners[event_type] = impl.plugin_name
    return handlers
