"""Recording money once: payments, failures and disputes.

A successful payment is keyed by its PaymentIntent when the event names one (so an invoice
event and a payment_intent event for the same money make one row, whichever comes first), else
by the invoice or checkout session. A failure is keyed by invoice and attempt.
"""

from __future__ import annotations

from typing import Any

from vibe.billing.domain import Commission, Payment
from vibe.plugins.context import StripeEventContext

PAYMENT_COLUMNS = (
    "dedupe_key", "user_id", "customer_id", "status", "kind", "amount", "currency", "invoice_id",
    "payment_intent_id", "charge_id", "checkout_session_id", "subscription_id", "failure_message",
    "source_event_id", "created", "recorded_at",
)
# Filled in later when a second event about the same money knows more.
_FILLABLE = ("user_id", "customer_id", "invoice_id", "charge_id", "checkout_session_id", "subscription_id")


def success_key(*, payment_intent_id: str | None, invoice_id: str | None = None,
                checkout_session_id: str | None = None, charge_id: str | None = None) -> str:
    for prefix, value in (("pi", payment_intent_id), ("in", invoice_id), ("cs", checkout_session_id),
                          ("ch", charge_id)):
        if value:
            return f"{prefix}:{value}"
    raise ValueError("a payment needs a PaymentIntent, invoice, checkout session or charge id")


async def record_payment(ctx: StripeEventContext, *, dedupe_key: str, status: str, kind: str,
                         amount: int, currency: str, **ids: Any) -> tuple[dict[str, Any], bool]:
    """Insert the payment unless its key exists (then fill in what was missing).

    Returns the row (a dict) and whether it is new; a new row is announced with
    `payment_succeeded` or `payment_failed`, as a `vibe.billing.domain.Payment` (other statuses,
    such as a plugin's `refunded`, are announced by no one).
    """
    values = {name: None for name in PAYMENT_COLUMNS}
    values.update(ids)
    values.update(dedupe_key=dedupe_key, status=status, kind=kind, amount=int(amount),
                  currency=(currency or "").lower(), source_event_id=ctx.event_id,
                  created=ctx.created, recorded_at=ctx.now)
    inserted = await ctx.tx.fetchall(
        f"INSERT INTO payments ({', '.join(PAYMENT_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(PAYMENT_COLUMNS))}) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING *",
        [values[name] for name in PAYMENT_COLUMNS],
    )
    if inserted:
        row = inserted[0]
    else:
        fills = {name: values[name] for name in _FILLABLE if values[name]}
        assignments = ", ".join(f"{name} = COALESCE({name}, %s)" for name in fills) or "dedupe_key = dedupe_key"
        row = await ctx.tx.fetchone(
            f"UPDATE payments SET {assignments} WHERE dedupe_key = %s RETURNING *", (*fills.values(), dedupe_key)
        )
    hook = {"succeeded": "payment_succeeded", "failed": "payment_failed"}.get(status)
    if inserted and hook:
        await ctx.announce(hook, payment=Payment.from_row(row))
    return row, bool(inserted)


async def user_for_charge(ctx: StripeEventContext, charge_id: str | None, payment_intent_id: str | None):
    """The user who paid a charge, from the payments recorded for it."""
    for column, value in (("charge_id", charge_id), ("payment_intent_id", payment_intent_id)):
        if value:
            user = await ctx.tx.fetchval(
                f"SELECT user_id FROM payments WHERE {column} = %s AND user_id IS NOT NULL LIMIT 1", (value,)
            )
            if user:
                return user
    return None


async def record_dispute(ctx: StripeEventContext, dispute: dict, user_id: str | None,
                         charge_id: str | None, payment_intent_id: str | None) -> bool:
    rows = await ctx.tx.fetchall(
        "INSERT INTO disputes (id, user_id, charge_id, payment_intent_id, amount, currency, reason, "
        "status, source_event_id, created, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (dispute["id"], user_id, charge_id, payment_intent_id, int(dispute.get("amount") or 0),
         str(dispute.get("currency") or "").lower(), dispute.get("reason"), dispute.get("status"),
         ctx.event_id, int(dispute.get("created") or ctx.created), ctx.now),
    )
    if not rows:
        return False
    ctx.tx.defer(
        "INSERT INTO review_flags (user_id, reason, reference, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (reference) DO NOTHING",
        (user_id, f"dispute {dispute.get('reason') or ''}".strip(), f"dispute:{dispute['id']}", ctx.now),
    )
    return True


async def record_commission(ctx: StripeEventContext, payment: Payment | dict, referrer_id: str,
                            rate: float) -> Commission | None:
    """The referrer's share of a payment (rounded down to the smallest currency unit), once per
    payment: the commission as stored, or None when this payment already had one. `payment` is
    the `payment_succeeded` hook's `Payment` (or a payments row, as `record_payment` returns)."""
    if not isinstance(payment, Payment):
        payment = Payment.from_row(payment)
    amount = int(payment.amount * rate)
    rows = await ctx.tx.fetchall(
        "INSERT INTO commissions (payment_id, referrer_id, referred_user_id, amount, currency, rate, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING RETURNING id",
        (payment.id, referrer_id, payment.user_id, amount, payment.currency, rate, ctx.now),
    )
    if not rows:
        return None
    return Commission(id=rows[0]["id"], referrer_id=referrer_id, referred_user_id=payment.user_id,
                      payment_id=payment.id, amount=amount, currency=payment.currency, rate=rate)
