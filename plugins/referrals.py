"""Referral commissions: the referrer of a paying user earns a share of each payment, once."""

from vibe.api import hookimpl, record_commission


@hookimpl
async def payment_succeeded(ctx, payment):
    if not payment.user_id or payment.amount <= 0:
        return
    payer = await ctx.profile(payment.user_id)  # usually the one the handler read: no round trip
    referrer = payer["referred_by"] if payer else None
    if not referrer or referrer == payment.user_id:
        return
    commission = await record_commission(ctx, payment, referrer, ctx.settings.billing.referral_commission_rate)
    if commission is not None:
        await ctx.announce("commission_earned", commission=commission)
