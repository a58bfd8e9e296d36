"""Every hook a vibe plugin can implement. Each is documented in docs/plugins.md.

Two kinds:

* Registration hooks are called once at start-up and return data (handlers, templates,
  endpoints, commands). The host collects them all; a duplicate is a start-up error.
* Domain hooks announce what happened, inside the transaction that made it happen. They get a
  `ctx` (`vibe.context.DomainContext`: `ctx.tx` for SQL, `ctx.settings`, `ctx.announce(...)`)
  and may be `async def`; the host awaits them one after another on the same transaction, so an
  effect is applied exactly once or not at all. Raise to roll the whole change back.

Hook implementations accept any subset of the arguments, by name (pluggy's rule).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vibe")
hookimpl = pluggy.HookimplMarker("vibe")


# -- registration ---------------------------------------------------------------------------


@hookspec
def register_stripe_handlers(settings):
    """Return `{event_type: async handler(ctx)}` for the Stripe event types this plugin handles."""


@hookspec
def register_cli_commands(subparsers):
    """Add `python run.py` sub-commands: call `subparsers.add_parser(...)` and set `func`."""


@hookspec
def register_routes(app):
    """Add HTTP routes to the aiohttp application before it starts."""


@hookspec
def register_analytics_endpoints(settings):
    """Return analytics endpoint definitions served under /functions/v1/analytics-tracking/."""


@hookspec
def register_email_templates(settings):
    """Return email template definitions (name, category, required data) for the email queue."""


# -- domain events (inside the transaction that caused them) ----------------------------------


@hookspec
def stripe_event_processed(ctx, event, outcome):
    """A Stripe event was handled; `outcome` is `processed`, `ignored` or `stale`."""


@hookspec
def customer_linked(ctx, user_id, customer_id):
    """A Stripe customer was linked to a user for the first time."""


@hookspec
def user_created(ctx, user):
    """A profile was created (onboarding, or billing naming a user not yet seen)."""


@hookspec
def user_changed(ctx, user_id, fields):
    """A user's profile or billing state changed; caches holding it must forget it."""


@hookspec
def subscription_changed(ctx, user_id, change):
    """A user's tier or subscription status changed (`change` has old_tier, tier, status, ...)."""


@hookspec
def payment_succeeded(ctx, payment):
    """Money arrived, recorded once (`payment` has id, user_id, amount, currency, kind, ...)."""


@hookspec
def payment_failed(ctx, payment):
    """A payment attempt failed (`payment` has user_id, amount, currency, invoice_id, ...)."""


@hookspec
def dispute_created(ctx, dispute):
    """A customer disputed a charge; the user is flagged for an administrator."""


@hookspec
def commission_earned(ctx, commission):
    """A referrer earned a commission on a referred user's payment (recorded once)."""


@hookspec
def workshop_completed(ctx, user_id, workshop_id, item):
    """A learner completed a workshop for the first time."""


@hookspec
def achievement_unlocked(ctx, user_id, achievement):
    """A learner unlocked an achievement for the first time."""
