"""Referral commissions: the referrer of a paying user earns a share of each payment, once."""

from vibe.plugins.hookspecs import hookimpl


@hookimpl
async def payment_succeeded(ctx, payment):
    if not payment["user_id"] or payment["amount"] <= 0:
        return
    payer = await ctx.profile(payment["user_id"])  # usually the one the handler read: no round trip
    referrer = payer["referred_by"] if payer else None
    if not referrer or referrer == payment["user_id"]:
        return
    rate = ctx.settings.referral_commission_rate
    amount = int(payment["amount"] * rate)  # smallest currency unit, rounded down
    rows = await ctx.tx.fetchall(
        "INSERT INTO commissions (payment_id, referrer_id, referred_user_id, amount, currency, rate, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING RETURNING id",
        (payment["id"], referrer, payment["user_id"], amount, payment["currency"], rate, ctx.now),
    )
    if rows:
        await ctx.announce("commission_earned", commission={
            "id": rows[0]["id"], "referrer_id": referrer, "referred_user_id": payment["user_id"],
            "payment_id": payment["id"], "amount": amount, "currency": payment["currency"], "rate": rate,
        })
