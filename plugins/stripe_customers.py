"""customer.created: link the Stripe customer to a user."""

from vibe.api import (
    EventIgnored,
    ensure_profile,
    hookimpl,
    link_customer,
    metadata_user_id,
    user_by_email,
)


async def customer_created(ctx):
    customer = ctx.obj
    email = customer.get("email")
    user_id = metadata_user_id(customer) or await user_by_email(ctx.tx, email)
    if not user_id:
        raise EventIgnored("no user named in metadata.user_id and no profile with this email")
    await ensure_profile(ctx, user_id, email=email, full_name=customer.get("name"))
    linked = await link_customer(ctx, user_id, customer["id"], email)
    return f"linked to user {user_id}" if linked else f"already linked (user {user_id})"


@hookimpl
def register_stripe_handlers():
    return {"customer.created": customer_created}
