"""checkout.session.completed: link customer and subscription to the user; one-time payments."""

from vibe.api import (
    EventIgnored,
    hookimpl,
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
    user_id = session.get("client_reference_id") or (session.get("metadata") or {}).get("user_id")
    profile = await resolve_user(ctx, customer_id, user_id=user_id, email=email)
    if not profile:
        raise EventIgnored("no client_reference_id, metadata.user_id, customer or known email")
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
    return f"user {user_id}"


@hookimpl
def register_stripe_handlers():
    return {"checkout.session.completed": checkout_completed}
