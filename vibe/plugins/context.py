"""What a domain hook or a Stripe handler is given: the open transaction and a way to announce."""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

import pluggy

from vibe.config import Settings
from vibe.db.database import Transaction
from vibe.plugins.payload import typed


async def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of hook `name`, awaiting the async ones one after another.

    The ordering rules live here and only here (docs/plugins.md, "Async hooks and wrappers"):
    pluggy calls every implementation first (a plain one runs then; an async one returns a
    coroutine), then the coroutines run in the order of the list pluggy returned; when one
    raises, the later ones are closed unrun and the error propagates."""
    results = []
    pending = list(getattr(pm.hook, name)(**kwargs))
    try:
        for index, result in enumerate(pending):
            if inspect.isawaitable(result):
                result = await result
            results.append(result)
    except BaseException:
        for later in pending[index + 1:]:  # one failed: the others' coroutines will never run
            if inspect.iscoroutine(later):
                later.close()
        raise
    return results


@dataclasses.dataclass
class DomainContext:
    tx: Transaction
    settings: Settings
    pm: pluggy.PluginManager
    now: float = dataclasses.field(default_factory=time.time)
    # Profiles this unit of work has read or written, by user id, kept current by
    # billing.update_profile: a hook that needs the user's profile looks here before reading.
    profiles: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    async def announce(self, hook: str, **kwargs: Any) -> list[Any]:
        """Run domain hook `hook` in this transaction (e.g. `subscription_changed`). Its payloads
        are the types docs/plugins.md names (`vibe.api.SubscriptionChange`, ...); a dict given
        instead is converted, with a DeprecationWarning, for one release."""
        return await call_hook(self.pm, hook, ctx=self, **typed(hook, kwargs))

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's profile as this unit of work last saw it (`profiles`), else read now."""
        known = self.profiles.get(user_id)
        if known is not None:
            return known
        from vibe.billing.state import get_profile  # billing builds on this module

        return await get_profile(self.tx, user_id)


@dataclasses.dataclass
class StripeEventContext(DomainContext):
    event: dict = dataclasses.field(default_factory=dict)
    linked_customers: set[str] = dataclasses.field(default_factory=set)
    # What the dispatcher's batch read for all its events (vibe.billing.batch.BatchReads), or None
    batch: Any = None

    @property
    def obj(self) -> dict:
        return self.event["data"]["object"]

    @property
    def event_id(self) -> str:
        return self.event["id"]

    @property
    def created(self) -> int:
        return int(self.event["created"])
