"""Referrals: who referred a learner, and the commission each of their payments earns the referrer.

A learner's referrer (`profiles.referred_by`) is set once, by `create_profile`'s referral code or
by a Checkout Session's `metadata.referralCode`, and never replaced. Each succeeded payment of a
referred learner earns the referrer `REFERRAL_COMMISSION_RATE` of it, once
(`record_commission`, keyed by the payment); a refund or lost dispute reverses it
(`vibe.billing.refunds`).
"""

from __future__ import annotations

from vibe.billing.domain import Commission, Payment
from vibe.billing.payments import record_commission
from vibe.plugins.context import StripeEventContext


async def earn_commission(ctx: StripeEventContext, payment: Payment | dict) -> Commission | None:
    """The payer's referrer's commission on a succeeded payment, recorded and announced
    (`commission_earned`) once: none without a referrer, for the referrer's own payment, or for
    nothing. The referral plugin calls it for each new payment; `attribute_referral` for a checkout's
    payments recorded before the referrer was known (events arrive in any order)."""
    if not isinstance(payment, Payment):
        payment = Payment.from_row(payment)
    if not payment.user_id or payment.amount <= 0:
        return None
    payer = await ctx.profile(payment.user_id)  # usually the one the handler read: no round trip
    referrer = payer["referred_by"] if payer else None
    if not referrer and payer and ctx.tx.dialect == "postgresql":
        # A referrer is never replaced, only set once (a checkout's referral code): when none is
        # known, read it under the row lock, so a checkout setting it concurrently either commits
        # first (and is seen here) or waits and then finds this payment.
        referrer = await ctx.tx.fetchval("SELECT referred_by FROM profiles WHERE id = %s FOR UPDATE",
                                         (payment.user_id,))
    if not referrer or referrer == payment.user_id:
        return None
    commission = await record_commission(ctx, payment, referrer, ctx.settings.billing.referral_commission_rate)
    if commission is not None:
        await ctx.announce("commission_earned", commission=commission)
    return commission


async def attribute_referral(ctx: StripeEventContext, user_id: str, code: str, *, checkout_session_id: str,
                             subscription_id: str | None = None, invoice_id: str | None = None) -> str | None:
    """Make the owner of referral `code` the user's referrer, when the user has none yet: never
    themselves, never over an earlier referrer (the UPDATE's own condition decides, so two events
    cannot both set it); an unknown code changes nothing. Then this checkout's payments (its
    session, subscription or invoice) recorded before it earn their commission. The referrer's
    id when set now, else None."""
    referrer = await ctx.tx.fetchval("SELECT id FROM profiles WHERE referral_code = %s", (code.upper(),))
    if referrer is None or referrer == user_id:
        return None
    rows = await ctx.tx.fetchall(
        "UPDATE profiles SET referred_by = %s, updated_at = %s WHERE id = %s AND referred_by IS NULL RETURNING id",
        (referrer, ctx.now, user_id))
    if not rows:
        return None
    if user_id in ctx.profiles:
        ctx.profiles[user_id] = {**ctx.profiles[user_id], "referred_by": referrer, "updated_at": ctx.now}
    await ctx.announce("user_changed", user_id=user_id, fields=["referred_by"])
    for payment in await ctx.tx.fetchall(
            "SELECT * FROM payments WHERE user_id = %s AND status = 'succeeded' AND "
            "(checkout_session_id = %s OR subscription_id = %s OR invoice_id = %s) ORDER BY id",
            (user_id, checkout_session_id, subscription_id, invoice_id)):
        await earn_commission(ctx, payment)
    return referrer
