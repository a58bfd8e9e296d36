"""invoice.payment_succeeded, invoice.paid, invoice_payment.paid / invoice.payment_failed:
record the money (one payment however many of these events say so) or the failure."""

from vibe.api import (
    EventIgnored,
    SubscriptionChange,
    hookimpl,
    invoice_payment_ids,
    invoice_payment_intent,
    invoice_subscription,
    mark_past_due,
    metadata_user_id,
    object_id,
    record_link,
    record_payment,
    resolve_user,
    success_key,
    superseded,
    update_profile,
)


async def _context(ctx):
    invoice = ctx.obj
    customer_id = object_id(invoice.get("customer"))
    # The user: the invoice's metadata, else its subscription's (older API versions carry it at
    # the top level, newer ones under `parent`).
    details = invoice.get("subscription_details"), (invoice.get("parent") or {}).get("subscription_details")
    profile = await resolve_user(ctx, customer_id, user_id=metadata_user_id(invoice, *details),
                                 email=invoice.get("customer_email"))
    return invoice, customer_id, profile


async def payment_succeeded(ctx):
    invoice, customer_id, profile = await _context(ctx)
    user_id = profile["id"] if profile else None
    pi = invoice_payment_intent(invoice)
    amount = invoice.get("amount_paid")
    if amount is None:
        amount = invoice.get("total") or 0
    row, new = await record_payment(
        ctx, dedupe_key=success_key(payment_intent_id=pi, invoice_id=invoice["id"]), status="succeeded",
        kind="invoice", amount=amount, currency=invoice.get("currency") or "", user_id=user_id,
        customer_id=customer_id, invoice_id=invoice["id"], payment_intent_id=pi,
        charge_id=object_id(invoice.get("charge")), subscription_id=invoice_subscription(invoice),
    )
    # The invoice's payments, when it lists them (expanded, or newer API versions): link each.
    for entry in (invoice.get("payments") or {}).get("data") or []:
        if isinstance(entry, dict) and entry.get("status", "paid") == "paid":
            entry_pi, entry_charge = invoice_payment_ids(entry)
            if entry_pi or entry_charge:
                await record_link(ctx, invoice["id"], entry_pi, entry.get("id"), entry_charge)
    return f"payment {row['id']} {'recorded' if new else 'already recorded'}"


async def invoice_payment_paid(ctx):
    """`invoice_payment.paid` (API 2025-03-31 and later): the only event naming both an invoice
    and the PaymentIntent that paid it. Links them; the payment stays the one either recorded."""
    entry = ctx.obj
    invoice_id = object_id(entry.get("invoice"))
    pi, charge = invoice_payment_ids(entry)
    if not invoice_id or not (pi or charge):
        raise EventIgnored("the invoice payment names no invoice, or neither a PaymentIntent nor a charge")
    row = await record_link(ctx, invoice_id, pi, entry.get("id"), charge)
    linked = f"invoice {invoice_id} paid by {pi or charge}"
    return f"{linked}: payment {row['id']}" if row else f"{linked}: no payment recorded yet"


async def payment_failed(ctx):
    invoice, customer_id, profile = await _context(ctx)
    user_id = profile["id"] if profile else None
    subscription_id = invoice_subscription(invoice)
    attempt = invoice.get("attempt_count") or 1
    error = (invoice.get("last_finalization_error") or {}).get("message")
    row, new = await record_payment(
        ctx, dedupe_key=f"failed:in:{invoice['id']}:{attempt}", status="failed", kind="invoice",
        amount=invoice.get("amount_due") or 0, currency=invoice.get("currency") or "", user_id=user_id,
        customer_id=customer_id, invoice_id=invoice["id"], payment_intent_id=invoice_payment_intent(invoice),
        subscription_id=subscription_id, failure_message=error,
    )
    if subscription_id and profile:
        await _mark_past_due(ctx, profile, subscription_id)
    return f"failure {row['id']} {'recorded' if new else 'already recorded'}"


async def _mark_past_due(ctx, profile, subscription_id):
    """Past due, unless a newer subscription event (say, the retry that succeeded) says otherwise."""
    if await superseded(ctx, subscription_id):
        return
    updated = await mark_past_due(ctx, subscription_id)
    user_id = profile["id"]
    if (updated or profile["stripe_subscription_id"] == subscription_id) and profile["subscription_status"] in (
        "active", "trialing"
    ):
        await update_profile(ctx, user_id, {"subscription_status": "past_due"})
        await ctx.announce("subscription_changed", user_id=user_id, change=SubscriptionChange(
            subscription_id=subscription_id, old_tier=profile["tier"], tier=profile["tier"],
            status="past_due", old_status=profile["subscription_status"],
            current_period_end=profile["current_period_end"],
            cancel_at_period_end=bool(profile["cancel_at_period_end"]), source="stripe",
            event_id=ctx.event_id,
        ))


@hookimpl
def register_stripe_handlers():
    return {"invoice.payment_succeeded": payment_succeeded, "invoice.paid": payment_succeeded,
            "invoice_payment.paid": invoice_payment_paid, "invoice.payment_failed": payment_failed}
