"""Money that goes back: refunds and lost disputes, and the commissions they reverse.

A refund is kept per charge (`refunds`, keyed by the charge, with Stripe's cumulative
`amount_refunded`: the largest seen wins, so partial refunds delivered out of order, twice or
replayed count once). A dispute is a `disputes` row whose status `charge.dispute.closed`
updates. Either may arrive before the payment it concerns, or before vibe knows which payment
that is (a basil invoice names neither its charge nor its PaymentIntent until
`invoice_payment.paid`): it is stored by charge and PaymentIntent and applied, by
`apply_reversals`, whenever a payment is recorded or learns its charge or PaymentIntent. No
event waits for it.

Applied to a payment, the refunds and lost disputes set its `amount_refunded` and
`amount_lost`; a payment fully refunded or lost in a dispute has its referral commission
reversed by one `commission_reversals` row (the negative amount, never a deletion), once. A
commission is not earned on a payment already reversed when it is recorded
(`record_commission` returns None), so the referrer's net is the same in every order.
"""

from __future__ import annotations

from typing import Any

from vibe.billing.state import update_profile
from vibe.plugins.context import StripeEventContext


def _by_payment(row: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """A WHERE clause (and its parameters) matching what concerns this payment's charge or intent."""
    parts, params = [], []
    for column in ("charge_id", "payment_intent_id"):
        if row.get(column):
            parts.append(f"{column} = %s")
            params.append(row[column])
    return (" OR ".join(parts), params) if parts else None


async def _lock_payment(ctx: StripeEventContext, payment_intent_id: str | None) -> None:
    """Take the row lock the payment events take for this PaymentIntent (`payment_keys`), so a
    refund or dispute and its payment, processed at once by two batches, serialise: whichever
    commits second sees the other's row."""
    if payment_intent_id:
        await ctx.tx.execute(
            "INSERT INTO payment_keys (key, payment_id) VALUES (%s, NULL) "
            "ON CONFLICT (key) DO UPDATE SET payment_id = payment_keys.payment_id", (f"pi:{payment_intent_id}",))


async def record_refund(ctx: StripeEventContext, charge: dict) -> dict[str, Any] | None:
    """Store a `charge.refunded` charge's refund state (its cumulative `amount_refunded`) and
    apply it to its payment; the payment's row after, or None while it is not recorded yet."""
    pi = charge.get("payment_intent")
    pi = pi.get("id") if isinstance(pi, dict) else pi or None
    amount, refunded = int(charge.get("amount") or 0), int(charge.get("amount_refunded") or 0)
    full = bool(charge.get("refunded")) or (amount > 0 and refunded >= amount)
    await _lock_payment(ctx, pi)
    await ctx.tx.execute(
        "INSERT INTO refunds (charge_id, payment_intent_id, amount, amount_refunded, currency, full_refund, "
        "source_event_id, created, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (charge_id) DO UPDATE SET "
        "payment_intent_id = COALESCE(refunds.payment_intent_id, excluded.payment_intent_id), "
        "amount_refunded = CASE WHEN excluded.amount_refunded > refunds.amount_refunded "
        "THEN excluded.amount_refunded ELSE refunds.amount_refunded END, "
        "full_refund = CASE WHEN excluded.full_refund THEN excluded.full_refund ELSE refunds.full_refund END, "
        "created = CASE WHEN excluded.amount_refunded > refunds.amount_refunded "
        "THEN excluded.created ELSE refunds.created END, updated_at = excluded.updated_at",
        (charge["id"], pi, amount, refunded, str(charge.get("currency") or "").lower(), full,
         ctx.event_id, ctx.created, ctx.now),
    )
    return await _apply_to_payment_of(ctx, {"charge_id": charge["id"], "payment_intent_id": pi})


async def close_dispute(ctx: StripeEventContext, dispute_id: str, status: str | None,
                        charge_id: str | None, payment_intent_id: str | None) -> dict[str, Any] | None:
    """A dispute closed (`charge.dispute.closed`): its status, applied to its payment (`lost`:
    the payment's `amount_lost`). The payment's row after, or None while it is not recorded yet."""
    await _lock_payment(ctx, payment_intent_id)
    await ctx.tx.execute("UPDATE disputes SET status = %s WHERE id = %s", (status, dispute_id))
    # Applied whatever the outcome: a dispute that came before its payment gets its user.
    return await _apply_to_payment_of(ctx, {"charge_id": charge_id, "payment_intent_id": payment_intent_id})


async def _apply_to_payment_of(ctx: StripeEventContext, ids: dict[str, Any]) -> dict[str, Any] | None:
    match = _by_payment(ids)
    if match is None:
        return None
    row = await ctx.tx.fetchone(
        f"SELECT * FROM payments WHERE status = 'succeeded' AND ({match[0]}) ORDER BY id LIMIT 1", match[1])
    return await apply_reversals(ctx, row) if row else None


async def apply_reversals(ctx: StripeEventContext, row: dict[str, Any]) -> dict[str, Any]:
    """Bring a succeeded payment's `amount_refunded` and `amount_lost` up to what is stored for
    its charge and PaymentIntent, and reverse its commission when it is fully refunded or lost.
    Returns the row as it is now."""
    match = _by_payment(row)
    if row.get("status") != "succeeded" or match is None:
        return row
    where, params = match
    refund = await ctx.tx.fetchone(
        "SELECT COALESCE(SUM(amount_refunded), 0) AS refunded, "
        f"COALESCE(SUM(CASE WHEN full_refund THEN 1 ELSE 0 END), 0) AS full FROM refunds WHERE {where}", params)
    lost = int(await ctx.tx.fetchval(
        f"SELECT COALESCE(SUM(amount), 0) FROM disputes WHERE status = 'lost' AND ({where})", params) or 0)
    refunded = int(refund["refunded"])
    if int(refund["full"]) and refunded < int(row["amount"]):
        refunded = int(row["amount"])
    if (refunded, lost) != (int(row.get("amount_refunded") or 0), int(row.get("amount_lost") or 0)):
        row = await ctx.tx.fetchone(
            "UPDATE payments SET amount_refunded = %s, amount_lost = %s WHERE id = %s RETURNING *",
            (refunded, lost, row["id"]))
        await ctx.tx.execute(f"UPDATE refunds SET payment_id = %s WHERE payment_id IS NULL AND ({where})",
                             (row["id"], *params))
    if row["user_id"] and await ctx.tx.execute(
            f"UPDATE disputes SET user_id = %s WHERE user_id IS NULL AND ({where})", (row["user_id"], *params)):
        # A dispute that came before its payment: its user, now known, is flagged as on arrival.
        await ctx.tx.execute(
            "UPDATE review_flags SET user_id = %s WHERE user_id IS NULL AND reference IN "
            f"(SELECT 'dispute:' || id FROM disputes WHERE user_id = %s AND ({where}))",
            (row["user_id"], row["user_id"], *params))
        await update_profile(ctx, row["user_id"], {"needs_review": True})
    reason = _reversal_reason(row)
    if reason:
        await reverse_commission(ctx, row["id"], reason)
    return row


def _reversal_reason(row: dict[str, Any]) -> str | None:
    if int(row.get("amount_lost") or 0) > 0:
        return "dispute_lost"
    if int(row["amount"]) > 0 and int(row.get("amount_refunded") or 0) >= int(row["amount"]):
        return "refunded"
    return None


async def reversal_due(ctx: StripeEventContext, payment_id: int) -> bool:
    """Whether the payment is fully refunded or lost in a dispute (its commission is void)."""
    row = await ctx.tx.fetchone("SELECT amount, amount_refunded, amount_lost FROM payments WHERE id = %s",
                                (payment_id,))
    return bool(row and _reversal_reason(row))


async def reverse_commission(ctx: StripeEventContext, payment_id: int, reason: str) -> int | None:
    """Reverse the payment's referral commission, once: a `commission_reversals` row with the
    negative amount (the commission stays). Its id, or None (no commission, or reversed before)."""
    rows = await ctx.tx.fetchall(
        "INSERT INTO commission_reversals (commission_id, payment_id, referrer_id, amount, currency, reason, "
        "source_event_id, created_at) SELECT id, payment_id, referrer_id, -amount, currency, %s, %s, %s "
        "FROM commissions WHERE payment_id = %s ON CONFLICT (commission_id) DO NOTHING RETURNING id",
        (reason, ctx.event_id, ctx.now, payment_id),
    )
    return rows[0]["id"] if rows else None
