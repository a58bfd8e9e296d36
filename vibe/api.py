"""The plugin API: everything a plugin may import from vibe, in one place (docs/plugins.md).

Plugins in `plugins/` and `examples/` import from here and nowhere else in vibe
(tests/test_layout.py holds them to it), so vibe's packages can move and change inside without
breaking a plugin. Each name is documented where it is defined; this module only gathers them.
"""

from vibe.analytics.model import (
                                AnalyticsEndpoint,
                                Event,
                                EventInvalid,
                                check_name,
                                choice,
                                number,
                                text,
)
from vibe.analytics.schemas import choice_field, name_field, number_field, text_field
from vibe.analytics.store import day, store_events, upsert_sum
from vibe.billing.domain import (
                                Commission,
                                Dispute,
                                Payment,
                                SubscriptionChange,
                                UserRecord,
)
from vibe.billing.outcomes import EventIgnored, EventStale
from vibe.billing.payments import (
                                find_payment,
                                invoice_payment_ids,
                                record_commission,
                                record_dispute,
                                record_link,
                                record_payment,
                                success_key,
                                user_for_charge,
                                wait_for_invoice_link,
)
from vibe.billing.referrals import attribute_referral, earn_commission
from vibe.billing.refunds import close_dispute, record_refund, reverse_commission
from vibe.billing.state import (
                                GRANTING,
                                claim_version,
                                ensure_profile,
                                get_profile,
                                invoice_payment_intent,
                                invoice_subscription,
                                link_customer,
                                mark_past_due,
                                metadata_referral_code,
                                metadata_user_id,
                                object_id,
                                period_end,
                                resolve_user,
                                save_subscription,
                                subscription_price,
                                subscription_tier,
                                superseded,
                                tier_for_price,
                                update_profile,
                                user_by_email,
)
from vibe.config import TIERS
from vibe.email.queue import enqueue_for
from vibe.email.templates import EmailTemplate
from vibe.plugins.context import DomainContext, StripeEventContext
from vibe.plugins.hookspecs import hookimpl
from vibe.users.domain import Achievement, CompletedItem
from vibe.users.progress import recent_progress
from vibe.web.validation import Field, Shape

__all__ = [
    # hooks
    "hookimpl",
    # schemas: what a body, an endpoint's properties or a template's data may hold (checked and documented)
    "Field", "Shape", "DomainContext", "StripeEventContext",
    # what the domain hooks carry (docs/plugins.md, "Hook reference")
    "UserRecord", "SubscriptionChange", "Payment", "Dispute", "Commission", "CompletedItem", "Achievement",
    # Stripe: how an event ended, the billing state, money
    "EventIgnored", "EventStale",
    "GRANTING", "TIERS", "claim_version", "superseded", "ensure_profile", "get_profile", "link_customer",
    "resolve_user", "metadata_user_id", "metadata_referral_code", "attribute_referral", "user_by_email", "update_profile", "object_id", "period_end", "subscription_price",
    "tier_for_price", "invoice_payment_intent", "invoice_subscription",
    "save_subscription", "mark_past_due", "subscription_tier",
    "record_payment", "record_dispute", "record_commission", "earn_commission", "success_key", "user_for_charge",
    "record_link", "find_payment", "invoice_payment_ids", "wait_for_invoice_link",
    "record_refund", "close_dispute", "reverse_commission",
    # users
    "recent_progress",
    # email
    "EmailTemplate", "enqueue_for",
    # analytics
    "AnalyticsEndpoint", "Event", "EventInvalid", "check_name", "choice", "number", "text",
    "text_field", "number_field", "choice_field", "name_field",
    "day", "store_events", "upsert_sum",
]
