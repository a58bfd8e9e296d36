"""charge.refunded and charge.dispute.closed: money that went back.

A refund (full or partial) is recorded against its payment; a full refund, or a dispute closed
as lost, reverses the payment's referral commission (a reversal row). Either may arrive before
the payment: it is kept by charge and applied when the payment is recorded (vibe.billing.refunds).
"""

from vibe.api import (
    Dispute,
    EventIgnored,
    close_dispute,
    hookimpl,
    object_id,
    record_dispute,
    record_refund,
    update_profile,
    user_for_charge,
)


async def charge_refunded(ctx):
    charge = ctx.obj
    if not (charge.get("amount_refunded") or charge.get("refunded")):
        raise EventIgnored("the charge reports nothing refunded")
    payment = await record_refund(ctx, charge)
    refunded = f"{int(charge.get('amount_refunded') or 0)} {str(charge.get('currency') or '').lower()}".strip()
    if payment is None:
        return f"refund of {refunded} kept for charge {charge['id']}; applied when its payment is recorded"
    return f"refund of {refunded} applied to payment {payment['id']}"


async def dispute_closed(ctx):
    dispute = ctx.obj
    charge_id = object_id(dispute.get("charge"))
    pi = object_id(dispute.get("payment_intent"))
    user_id = await user_for_charge(ctx, charge_id, pi)
    if await record_dispute(ctx, dispute, user_id, charge_id, pi):  # its `created` never came (or not yet)
        if user_id:
            await update_profile(ctx, user_id, {"needs_review": True})
        await ctx.announce("dispute_created", dispute=Dispute(
            id=dispute["id"], user_id=user_id, amount=dispute.get("amount"),
            currency=dispute.get("currency"), reason=dispute.get("reason"), charge_id=charge_id,
            payment_intent_id=pi, status=dispute.get("status"),
        ))
    payment = await close_dispute(ctx, dispute["id"], dispute.get("status"), charge_id, pi)
    status = dispute.get("status")
    if status != "lost":
        return f"dispute {dispute['id']} closed: {status}"
    if payment is None:
        return f"dispute {dispute['id']} lost; applied when its payment is recorded"
    return f"dispute {dispute['id']} lost: payment {payment['id']}"


@hookimpl
def register_stripe_handlers():
    return {"charge.refunded": charge_refunded, "charge.dispute.closed": dispute_closed}
