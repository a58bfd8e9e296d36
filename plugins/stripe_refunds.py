"""charge.refunded: money that went back (a lost dispute is in stripe_payments.py).

A refund (full or partial) is recorded against its payment; a full refund, or a dispute closed
as lost, reverses the payment's referral commission (a reversal row). Either may arrive before
the payment: it is kept by charge and applied when the payment is recorded (vibe.billing.refunds).
"""

from vibe.api import EventIgnored, hookimpl, record_refund


async def charge_refunded(ctx):
    charge = ctx.obj
    if not (charge.get("amount_refunded") or charge.get("refunded")):
        raise EventIgnored("the charge reports nothing refunded")
    payment = await record_refund(ctx, charge)
    refunded = f"{int(charge.get('amount_refunded') or 0)} {str(charge.get('currency') or '').lower()}".strip()
    if payment is None:
        return f"refund of {refunded} kept for charge {charge['id']}; applied when its payment is recorded"
    return f"refund of {refunded} applied to payment {payment['id']}"


@hookimpl
def register_stripe_handlers():
    return {"charge.refunded": charge_refunded}
