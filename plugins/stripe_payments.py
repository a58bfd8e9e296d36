"""payment_intent.succeeded, charge.dispute.created and charge.dispute.closed.

A PaymentIntent of API version 2025-03-31 or later does not name its invoice: its event waits
(woken at once) for `invoice_payment.paid`, so that an invoice's payment is one payment."""

from vibe.api import (
    Dispute,
    close_dispute,
    hookimpl,
    metadata_user_id,
    object_id,
    record_dispute,
    record_payment,
    resolve_user,
    success_key,
    update_profile,
    user_for_charge,
    wait_for_invoice_link,
)


async def payment_intent_succeeded(ctx):
    pi = ctx.obj
    customer_id = object_id(pi.get("customer"))
    profile = await resolve_user(ctx, customer_id, user_id=metadata_user_id(pi),
                                         email=pi.get("receipt_email"))
    user_id = profile["id"] if profile else None
    charge = object_id(pi.get("latest_charge"))
    if not charge:
        charges = (pi.get("charges") or {}).get("data") or []
        charge = charges[0].get("id") if charges else None
    amount = pi.get("amount_received") or pi.get("amount") or 0
    if "invoice" not in pi:  # API 2025-03-31 and later: only invoice_payment.paid says which invoice
        await wait_for_invoice_link(ctx, pi["id"])
    row, new = await record_payment(
        ctx, dedupe_key=success_key(payment_intent_id=pi["id"]), status="succeeded",
        kind="invoice" if pi.get("invoice") else "payment_intent", amount=amount,
        currency=pi.get("currency") or "", user_id=user_id, customer_id=customer_id,
        payment_intent_id=pi["id"], charge_id=charge, invoice_id=object_id(pi.get("invoice")),
    )
    return f"payment {row['id']} {'recorded' if new else 'already recorded'}"


async def _dispute(ctx) -> tuple[dict, str | None, str | None, str | None]:
    """Record the dispute (once) and announce it when new: (dispute, user, charge, PaymentIntent)."""
    dispute = ctx.obj
    charge_id = object_id(dispute.get("charge"))
    pi = object_id(dispute.get("payment_intent"))
    user_id = await user_for_charge(ctx, charge_id, pi)
    if await record_dispute(ctx, dispute, user_id, charge_id, pi):
        if user_id:
            await update_profile(ctx, user_id, {"needs_review": True})
        await ctx.announce("dispute_created", dispute=Dispute(
            id=dispute["id"], user_id=user_id, amount=dispute.get("amount"),
            currency=dispute.get("currency"), reason=dispute.get("reason"), charge_id=charge_id,
            payment_intent_id=pi, status=dispute.get("status"),
        ))
    return dispute, user_id, charge_id, pi


async def dispute_created(ctx):
    _, user_id, _, _ = await _dispute(ctx)
    return f"dispute recorded for user {user_id}" if user_id else "dispute recorded; no user matched the charge"


async def dispute_closed(ctx):
    """A closed dispute (its `created` may never have come): lost reverses the payment's commission."""
    dispute, _, charge_id, pi = await _dispute(ctx)
    payment = await close_dispute(ctx, dispute["id"], dispute.get("status"), charge_id, pi)
    status = dispute.get("status")
    if status != "lost":
        return f"dispute {dispute['id']} closed: {status}"
    if payment is None:
        return f"dispute {dispute['id']} lost; applied when its payment is recorded"
    return f"dispute {dispute['id']} lost: payment {payment['id']}"


@hookimpl
def register_stripe_handlers():
    return {"payment_intent.succeeded": payment_intent_succeeded, "charge.dispute.created": dispute_created,
            "charge.dispute.closed": dispute_closed}
