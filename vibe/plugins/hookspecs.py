"""Every hook a vibe plugin can implement. Each is documented in docs/plugins.md.

Two kinds:

* Registration hooks are called once at start-up and return data (handlers, templates,
  endpoints, commands). The host collects them all; a duplicate is a start-up error.
* Domain hooks announce what happened, inside the transaction that made it happen. They get a
  `ctx` (`vibe.plugins.context.DomainContext`: `ctx.tx` for SQL, `ctx.settings`,
  `ctx.announce(...)`) and may be `async def`; the host awaits them one after another on the
  same transaction, so an effect is applied exactly once or not at all. Raise to roll the whole
  change back. What they carry are frozen dataclasses, each named in the hook's docstring and
  exported by `vibe.api` (read their attributes; dict access works for one release, with a
  DeprecationWarning).

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
    """A Stripe event was handled (in the transaction of its handler's effects).

    `ctx`: `vibe.api.StripeEventContext`; `event`: dict, the Stripe event as Stripe sent it;
    `outcome`: str, `processed` (its handler returned) or `ignored` (no handler for its type).
    An event whose handler raised (stale, ignored by the handler, waiting, failed) is not announced."""


@hookspec
def customer_linked(ctx, user_id, customer_id):
    """A Stripe customer was linked to a user for the first time.

    `user_id`: str; `customer_id`: str, the Stripe customer (`cus_...`)."""


@hookspec
def user_created(ctx, user):
    """A profile was created (onboarding, or billing naming a user not yet seen).

    `user`: `vibe.api.UserRecord` (vibe/billing/domain.py), the new `profiles` row."""


@hookspec
def user_changed(ctx, user_id, fields):
    """A user's profile or billing state changed; caches holding it must forget it.

    `user_id`: str; `fields`: list[str], the changed column names, sorted."""


@hookspec
def subscription_changed(ctx, user_id, change):
    """A user's tier or subscription status changed.

    `user_id`: str; `change`: `vibe.api.SubscriptionChange` (vibe/billing/domain.py): old_tier,
    tier, old_status, status, current_period_end, cancel_at_period_end, amount, currency,
    source (`stripe` or `admin`), event_id, and for an admin's change reason and actor."""


@hookspec
def payment_succeeded(ctx, payment):
    """Money arrived, announced once per payment.

    `payment`: `vibe.api.Payment` (vibe/billing/domain.py), the `payments` row: id, user_id,
    amount (smallest currency unit), currency, kind, invoice_id, payment_intent_id, ..."""


@hookspec
def payment_failed(ctx, payment):
    """A payment attempt failed, announced once per invoice attempt.

    `payment`: `vibe.api.Payment` with status `failed` and failure_message."""


@hookspec
def dispute_created(ctx, dispute):
    """A customer disputed a charge; the user is flagged for an administrator.

    `dispute`: `vibe.api.Dispute` (vibe/billing/domain.py): id, user_id (or None), amount,
    currency, reason, charge_id, payment_intent_id, status."""


@hookspec
def commission_earned(ctx, commission):
    """A referrer earned a commission on a referred user's payment (recorded once).

    `commission`: `vibe.api.Commission` (vibe/billing/domain.py): id, referrer_id,
    referred_user_id, payment_id, amount, currency, rate."""


@hookspec
def workshop_completed(ctx, user_id, workshop_id, item):
    """A learner completed a workshop for the first time.

    `user_id`: str; `workshop_id`: str; `item`: `vibe.api.CompletedItem` (vibe/users/domain.py),
    the synced progress item: resource_type, resource_id, status, progress, completed_at, title."""


@hookspec
def achievement_unlocked(ctx, user_id, achievement):
    """A learner unlocked an achievement for the first time.

    `user_id`: str; `achievement`: `vibe.api.Achievement` (vibe/users/domain.py): key, name,
    description, unlocked_at."""
