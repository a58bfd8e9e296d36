"""What billing's domain hooks carry: typed, frozen payloads (docs/plugins.md, "Hook reference").

Amounts are integers in the currency's smallest unit (cents); currencies are ISO 4217 codes;
times are Unix seconds. Each type is built where billing announces it: `Payment` by
`record_payment`, `Dispute` by the `charge.dispute.created` handler, `Commission` by
`record_commission`, `SubscriptionChange` by the subscription and invoice handlers and by the
user-management actions, `UserRecord` by `ensure_profile` and onboarding (billing keeps the
profile: `get_profile`, `ensure_profile`, `update_profile` live in `vibe.billing.state`).

For one release each also answers the dict access it replaced, with a DeprecationWarning
(`vibe.plugins.payload.Payload`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, Self

from vibe.plugins.payload import Payload, carries

payload = dataclasses.dataclass(frozen=True, kw_only=True)


@carries(("user_created", "user"))
@payload
class UserRecord(Payload):
    """A profile as it was created (`user_created`): the `profiles` row."""

    id: str  # the user's id (the auth provider's subject)
    email: str | None = None  # lower-cased
    full_name: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    locale: str | None = None
    marketing_consent: bool = False
    role: str = "user"
    tier: str = "free"  # one of vibe.api.TIERS
    subscription_status: str | None = None  # Stripe's status (active, trialing, past_due, ...) or None
    current_period_end: int | None = None
    cancel_at_period_end: bool = False
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    referral_code: str | None = None  # the user's own code, to share
    referred_by: str | None = None  # the referrer's user id
    needs_review: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **overrides: Any) -> Self:
        """From a `profiles` row (SQLite's 0/1 booleans become bools)."""
        record = super().from_row(row, **overrides)
        flags = {n: bool(getattr(record, n)) for n in ("marketing_consent", "cancel_at_period_end", "needs_review")}
        return dataclasses.replace(record, **flags)


@carries(("subscription_changed", "change"))
@payload
class SubscriptionChange(Payload):
    """A user's tier or subscription status changed (`subscription_changed`)."""

    subscription_id: str | None  # the Stripe subscription (an admin change: the profile's, or None)
    old_tier: str  # the tier before; one of vibe.api.TIERS
    tier: str  # the tier now
    old_status: str | None  # the subscription status before (None: none, or a tier set by hand)
    status: str | None  # the subscription status now (active, trialing, past_due, canceled, ...)
    current_period_end: int | None  # when the paid period ends
    cancel_at_period_end: bool  # the subscription ends at current_period_end
    amount: int | None = None  # the price per interval; None when not known (admin, past due)
    currency: str | None = None  # the price's currency; None when not known
    source: Literal["stripe", "admin"] = "stripe"  # who changed it
    event_id: str | None = None  # the Stripe event that caused it (None for an admin's change)
    reason: str | None = None  # admin only: the audit reason
    actor: str | None = None  # admin only: `admin:<user id>` or `service`


@carries(("payment_succeeded", "payment"), ("payment_failed", "payment"))
@payload
class Payment(Payload):
    """Money recorded once (`payment_succeeded`, `payment_failed`): the `payments` row."""

    id: int  # the payments row's id
    dedupe_key: str  # `pi:<PaymentIntent>`, `in:<invoice>`, `cs:<session>` or `failed:in:<invoice>:<attempt>`
    user_id: str | None  # the payer, when known
    customer_id: str | None  # the Stripe customer
    status: str  # `succeeded` or `failed` (a plugin's own statuses are announced by no one)
    kind: str  # `invoice`, `checkout` or `payment_intent`
    amount: int  # smallest currency unit
    currency: str  # lower-case ISO 4217 code
    invoice_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
    checkout_session_id: str | None = None
    subscription_id: str | None = None
    failure_message: str | None = None  # a failure only: why, as Stripe said
    source_event_id: str | None = None  # the Stripe event that recorded it
    created: int = 0  # the Stripe event's time
    recorded_at: float = 0.0  # when vibe recorded it


@carries(("dispute_created", "dispute"))
@payload
class Dispute(Payload):
    """A customer disputed a charge (`dispute_created`); the user is already flagged for review."""

    id: str  # the Stripe dispute (`dp_...`)
    user_id: str | None  # the payer found through the charge, or None
    amount: int | None  # the disputed amount as Stripe sent it (smallest currency unit)
    currency: str | None  # as Stripe sent it
    reason: str | None  # Stripe's reason (`fraudulent`, `duplicate`, ...)
    charge_id: str | None  # the disputed charge
    payment_intent_id: str | None = None
    status: str | None = None  # Stripe's dispute status (`needs_response`, ...)


@carries(("commission_earned", "commission"))
@payload
class Commission(Payload):
    """A referrer earned a commission on a referred user's payment (`commission_earned`)."""

    id: int  # the commissions row's id
    referrer_id: str  # who earns it
    referred_user_id: str  # who paid
    payment_id: int  # the Payment it is a share of (one commission per payment)
    amount: int  # smallest currency unit, rounded down
    currency: str
    rate: float  # the share of the payment (BILLING referral commission rate)
