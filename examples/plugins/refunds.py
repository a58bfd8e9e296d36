"""A third-party plugin: handle `charge.refund.updated`, which vibe itself does not.

Load it with `VIBE_PLUGINS_DIRS=examples/plugins python run.py serve`, or copy it into a folder
of your own. vibe records refunds itself (`charge.refunded`); a refund that later *fails* (the
card was closed, say) comes as `charge.refund.updated` with `status: failed`: this plugin flags
the user who paid the charge for an administrator. Nothing in vibe/ changes.
"""

from vibe.api import hookimpl, object_id, update_profile, user_for_charge


async def refund_updated(ctx):
    refund = ctx.obj
    if refund.get("status") != "failed":
        return f"refund {refund['id']} is {refund.get('status')}: nothing to do"
    user_id = await user_for_charge(ctx, object_id(refund.get("charge")), object_id(refund.get("payment_intent")))
    if user_id:
        await update_profile(ctx, user_id, {"needs_review": True})
    return f"refund {refund['id']} of {refund.get('amount')} {refund.get('currency')} failed: user {user_id} flagged"


@hookimpl
def register_stripe_handlers():
    return {"charge.refund.updated": refund_updated}
