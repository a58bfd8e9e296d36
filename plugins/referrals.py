"""Referral commissions: the referrer of a paying user earns a share of each payment, once."""

from vibe.api import earn_commission, hookimpl


@hookimpl
async def payment_succeeded(ctx, payment):
    await earn_commission(ctx, payment)
