"""checkout.session.completed: link customer and subscription to the user, attribute the
referrer a checkout names, record one-time payments.

The platform creates its sessions with `client_reference_id` and `metadata.userId`, and, for a
referred learner, `metadata.referralCode`: the learner gets that referrer when they have none
yet, and this checkout's payments recorded before this event (an invoice can arrive first)
earn the commission they missed; later ones earn it as every payment does.
"""

from vibe.api import (
    EventIgnored,
    attribute_referral,
    hookimpl,
    metadata_referral_code,
    metadata_user_id,
    object_id,
    record_payment,
    resolve_user,
    success_key,
    update_profile,
)


async def checkout_completed(ctx):
    session = ctx.obj
    customer_id = object_id(session.get("customer"))
    email = (session.get("customer_details") or {}).get("email") or session.get("customer_email")
    user_id = session.get("client_reference_id") or metadata_user_id(session)
    profile = await resolve_user(ctx, customer_id, user_id=user_id, email=email)
    if not profile:
        raise EventIgnored("no client_reference_id, metadata.userId, customer or known email")
    user_id = profile["id"]
    subscription_id = object_id(session.get("subscription"))
    if subscription_id and profile["stripe_subscription_id"] != subscription_id:
        await update_profile(ctx, user_id, {"stripe_subscription_id": subscription_id})
    if session.get("mode") == "payment" and session.get("payment_status") == "paid":
        pi = object_id(session.get("payment_intent"))
        await record_payment(
            ctx, dedupe_key=success_key(payment_intent_id=pi, checkout_session_id=session["id"]),
            status="succeeded", kind="checkout", amount=session.get("amount_total") or 0,
            currency=session.get("currency") or "", user_id=user_id, customer_id=customer_id,
            payment_intent_id=pi, checkout_session_id=session["id"],
        )
    code = metadata_referral_code(session)
    invoice_id = object_id(session.get("invoice"))
    if code and await attribute_referral(ctx, user_id, code, checkout_session_id=session["id"],
                                         subscription_id=subscription_id, invoice_id=invoice_id):
        return f"user {user_id}, referred with code {code}"
    return f"user {user_id}"


@hookimpl
def register_stripe_handlers():
    return {"checkout.session.completed": checkout_completed}
