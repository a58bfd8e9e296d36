"""A third-party plugin: handle `charge.refunded`, which vibe itself does not.

Load it with `VIBE_PLUGINS_DIRS=examples/plugins python run.py serve`, or copy it into a folder
of your own. It records each refund once, as a payment row of status `refunded` for the user
who paid the charge, and flags the user for an administrator. Nothing in vibe/ changes.
"""

from vibe.api import (
    hookimpl,
    object_id,
    record_payment,
    update_profile,
    user_for_charge,
)


async def charge_refunded(ctx):
    charge = ctx.obj
    refunded = int(charge.get("amount_refunded") or 0)
    pi = object_id(charge.get("payment_intent"))
    user_id = await user_for_charge(ctx, charge["id"], pi)
    row, new = await record_payment(
        ctx, dedupe_key=f"refund:{charge['id']}:{refunded}", status="refunded", kind="refund",
        amount=refunded, currency=charge.get("currency") or "", user_id=user_id,
        customer_id=object_id(charge.get("customer")), charge_id=charge["id"], payment_intent_id=pi,
    )
    if new and user_id:
        await update_profile(ctx, user_id, {"needs_review": True})
    return f"refund of {refunded} {row['currency']} recorded for user {user_id}"


@hookimpl
def register_stripe_handlers():
    return {"charge.refunded": charge_refunded}
