"""Recording money once: payments, failures and disputes.

One payment is one row whatever the API version and whichever event arrives first. Its keys
(`payment_keys`) are every name it goes by: `pi:<PaymentIntent>`, `in:<invoice>`,
`cs:<checkout session>`. Older API versions name both the invoice and its PaymentIntent in
each event; from 2025-03-31 (basil) on only `invoice_payment.paid` does, and that link is kept
in `payment_links`. Recording a success takes the row locks of all its keys (in one sorted
order, so concurrent events about the same money serialise rather than insert twice), finds
the row any key already names and fills in what it lacked, or inserts one row, announced once.
The row's `dedupe_key` is its first name: the PaymentIntent when known, else the invoice or
checkout session. A failure is keyed by invoice and attempt.
"""

from __future__ import annotations

from typing import Any

from vibe.billing.domain import Commission, Payment
from vibe.billing.outcomes import WaitForCustomer
from vibe.billing.refunds import apply_reversals, reversal_due
from vibe.plugins.context import StripeEventContext

# How long a `payment_intent.succeeded` that names no invoice (API 2025-03-31 and later) waits,
# from its arrival, for `invoice_payment.paid` to say whether an invoice claims it; then it is
# recorded as a payment of its own. It is woken at once when the link or a payment naming it is
# recorded, so only a PaymentIntent of no invoice waits this long.
LINK_WAIT_SECONDS = 900.0

PAYMENT_COLUMNS = (
    "dedupe_key", "user_id", "customer_id", "status", "kind", "amount", "currency", "invoice_id",
    "payment_intent_id", "charge_id", "checkout_session_id", "subscription_id", "failure_message",
    "source_event_id", "created", "recorded_at",
)
# Filled in later when a second event about the same money knows more.
_FILLABLE = ("user_id", "customer_id", "invoice_id", "payment_intent_id", "charge_id", "checkout_session_id",
             "subscription_id")
_KEYED = (("pi", "payment_intent_id"), ("in", "invoice_id"), ("cs", "checkout_session_id"))


def success_key(*, payment_intent_id: str | None, invoice_id: str | None = None,
                checkout_session_id: str | None = None, charge_id: str | None = None) -> str:
    for prefix, value in (("pi", payment_intent_id), ("in", invoice_id), ("cs", checkout_session_id),
                          ("ch", charge_id)):
        if value:
            return f"{prefix}:{value}"
    raise ValueError("a payment needs a PaymentIntent, invoice, checkout session or charge id")


async def linked_intent(ctx: StripeEventContext, invoice_id: str | None) -> str | None:
    """The PaymentIntent that paid an invoice, as `invoice_payment.paid` (or an older-shaped
    event naming both) said."""
    if not invoice_id:
        return None
    return await ctx.tx.fetchval("SELECT payment_intent_id FROM payment_links WHERE invoice_id = %s "
                                 "ORDER BY created, payment_intent_id LIMIT 1", (invoice_id,))


async def linked_invoice(ctx: StripeEventContext, payment_intent_id: str | None) -> str | None:
    """The invoice a PaymentIntent paid (`payment_links`), or None."""
    if not payment_intent_id:
        return None
    return await ctx.tx.fetchval("SELECT invoice_id FROM payment_links WHERE payment_intent_id = %s "
                                 "ORDER BY created, invoice_id LIMIT 1", (payment_intent_id,))


async def _lock_keys(ctx: StripeEventContext, keys: list[str]) -> dict[str, int | None]:
    """Take the row lock of each key (creating it), in sorted order; the payment each names."""
    keys = sorted(set(keys))
    rows = await ctx.tx.fetchall(
        f"INSERT INTO payment_keys (key, payment_id) VALUES {', '.join(['(%s, NULL)'] * len(keys))} "
        "ON CONFLICT (key) DO UPDATE SET payment_id = payment_keys.payment_id RETURNING key, payment_id",
        keys,
    )
    return {row["key"]: row["payment_id"] for row in rows}


class WaitForInvoiceLink(WaitForCustomer):
    """Park a PaymentIntent's event until `invoice_payment.paid` links it (or LINK_WAIT_SECONDS)."""

    def __init__(self, payment_intent_id: str):
        Exception.__init__(self, f"waiting for invoice_payment.paid to say whether an invoice claims "
                                 f"PaymentIntent {payment_intent_id}")
        self.customer_id = f"invoice_payment:{payment_intent_id}"  # the dispatcher's waiting_for


async def wait_for_invoice_link(ctx: StripeEventContext, payment_intent_id: str) -> None:
    """For a PaymentIntent whose object cannot name its invoice (API 2025-03-31 and later):
    return when it is linked to an invoice, already recorded (a checkout session, an invoice
    listing its payments), or has waited LINK_WAIT_SECONDS since it arrived; else raise
    WaitForInvoiceLink, which parks the event until `record_link` (or its timer) wakes it."""
    if await linked_invoice(ctx, payment_intent_id) or await find_payment(ctx, payment_intent_id=payment_intent_id):
        return
    received = await ctx.tx.fetchval("SELECT received_at FROM stripe_events WHERE id = %s", (ctx.event_id,))
    grace = min(LINK_WAIT_SECONDS, ctx.settings.billing.wait_timeout_seconds / 2)
    if ctx.now - float(received if received is not None else ctx.created) < grace:
        raise WaitForInvoiceLink(payment_intent_id)


def _keys(ids: dict[str, Any]) -> list[str]:
    return [f"{prefix}:{ids[column]}" for prefix, column in _KEYED if ids.get(column)]


async def record_link(ctx: StripeEventContext, invoice_id: str, payment_intent_id: str | None,
                      invoice_payment_id: str | None = None, charge_id: str | None = None) -> dict[str, Any] | None:
    """Link an invoice to the PaymentIntent that paid it (once; `invoice_payment.paid`, or an
    invoice listing its payments), and make the payment either event recorded the payment of
    both (a payment by charge alone: that charge's). Returns that payment's row, or None when
    neither was recorded yet (the later one will find the link)."""
    if payment_intent_id:
        await ctx.tx.execute(
            "INSERT INTO payment_links (invoice_id, payment_intent_id, invoice_payment_id, source_event_id, created) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (invoice_id, payment_intent_id) DO NOTHING",
            (invoice_id, payment_intent_id, invoice_payment_id, ctx.event_id, ctx.created),
        )
        _wake_waiting(ctx, payment_intent_id)
    ids = {"invoice_id": invoice_id, "payment_intent_id": payment_intent_id, "charge_id": charge_id}
    found = {p for p in (await _lock_keys(ctx, _keys(ids))).values() if p}
    if not found:
        return None
    # Two rows only when both were recorded before this link existed (a PaymentIntent that waited
    # past LINK_WAIT_SECONDS, or rows from before this version): keep both, fill the first.
    return await _fill(ctx, min(found), ids, _keys(ids))


def invoice_payment_ids(entry: dict) -> tuple[str | None, str | None]:
    """An `invoice_payment`'s PaymentIntent and charge: under `payment` (2025-03-31 to
    2025-10) or at the top level (later versions); ids or expanded objects."""
    payment = entry.get("payment") if isinstance(entry.get("payment"), dict) else {}
    found = []
    for name in ("payment_intent", "charge"):
        value = payment.get(name) or entry.get(name)
        found.append(value.get("id") if isinstance(value, dict) else value or None)
    return found[0], found[1]


def _wake_waiting(ctx: StripeEventContext, payment_intent_id: str) -> None:
    """A `payment_intent.succeeded` parked for this link is due now (a row another batch holds
    is skipped: it rechecks on its own timer)."""
    ctx.tx.defer(
        "UPDATE stripe_events SET next_attempt_at = %s WHERE id IN (SELECT id FROM stripe_events "
        "WHERE status = 'waiting' AND waiting_for = %s FOR UPDATE SKIP LOCKED)",
        (ctx.now, f"invoice_payment:{payment_intent_id}"),
    )


async def find_payment(ctx: StripeEventContext, **ids: Any) -> dict[str, Any] | None:
    """The succeeded payment any of these ids names (`payment_intent_id`, `invoice_id`,
    `checkout_session_id`), through the invoice's link too; reads only."""
    ids = dict(ids)
    ids["payment_intent_id"] = ids.get("payment_intent_id") or await linked_intent(ctx, ids.get("invoice_id"))
    keys = _keys(ids)
    if not keys:
        return None
    return await ctx.tx.fetchone(
        "SELECT p.* FROM payment_keys k JOIN payments p ON p.id = k.payment_id "
        f"WHERE k.key IN ({', '.join(['%s'] * len(keys))}) ORDER BY p.id LIMIT 1", keys)


async def _fill(ctx: StripeEventContext, payment_id: int, fills: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    fills = {name: value for name, value in fills.items() if name in _FILLABLE and value}
    assignments = ", ".join(f"{name} = COALESCE({name}, %s)" for name in fills) or "id = id"
    row = await ctx.tx.fetchone(f"UPDATE payments SET {assignments} WHERE id = %s RETURNING *",
                                (*fills.values(), payment_id))
    await _claim_keys(ctx, payment_id, keys + _keys(row))
    return await apply_reversals(ctx, row)


async def _claim_keys(ctx: StripeEventContext, payment_id: int, keys: list[str]) -> None:
    keys = sorted(set(keys))
    await ctx.tx.execute(
        f"UPDATE payment_keys SET payment_id = %s WHERE payment_id IS NULL AND key IN ({', '.join(['%s'] * len(keys))})",
        (payment_id, *keys))


async def record_payment(ctx: StripeEventContext, *, dedupe_key: str, status: str, kind: str,
                         amount: int, currency: str, **ids: Any) -> tuple[dict[str, Any], bool]:
    """Record the payment once; returns its row (a dict) and whether it is new.

    A success (`status='succeeded'`) is found by any of its keys, the invoice's link included,
    whatever `dedupe_key` says; a new one is inserted under `dedupe_key` (prefer `success_key`).
    Other statuses are keyed by `dedupe_key` alone. A new row is announced with
    `payment_succeeded` or `payment_failed`, as a `vibe.billing.domain.Payment` (other
    statuses, such as a plugin's `refunded`, are announced by no one).
    """
    values = {name: None for name in PAYMENT_COLUMNS}
    values.update(ids)
    values.update(dedupe_key=dedupe_key, status=status, kind=kind, amount=int(amount),
                  currency=(currency or "").lower(), source_event_id=ctx.event_id,
                  created=ctx.created, recorded_at=ctx.now)
    keys: list[str] = []
    if status == "succeeded":
        values["payment_intent_id"] = values["payment_intent_id"] or await linked_intent(ctx, values["invoice_id"])
        values["invoice_id"] = values["invoice_id"] or await linked_invoice(ctx, values["payment_intent_id"])
        if values["invoice_id"] and kind == "payment_intent":
            values["kind"] = "invoice"
        keys = _keys(values) or [dedupe_key]
        if dedupe_key.split(":", 1)[0] in ("pi", "in", "cs") and _keys(values):
            values["dedupe_key"] = dedupe_key = keys[0]  # the PaymentIntent when known
        found = sorted({p for p in (await _lock_keys(ctx, keys)).values() if p})
        if found:
            return await _fill(ctx, found[0], values, keys), False
    inserted = await ctx.tx.fetchall(
        f"INSERT INTO payments ({', '.join(PAYMENT_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(PAYMENT_COLUMNS))}) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING *",
        [values[name] for name in PAYMENT_COLUMNS],
    )
    if not inserted:
        existing = await ctx.tx.fetchval("SELECT id FROM payments WHERE dedupe_key = %s", (dedupe_key,))
        if status == "succeeded":
            return await _fill(ctx, existing, values, keys), False
        fills = {name: values[name] for name in _FILLABLE if values[name]}
        assignments = ", ".join(f"{name} = COALESCE({name}, %s)" for name in fills) or "id = id"
        row = await ctx.tx.fetchone(f"UPDATE payments SET {assignments} WHERE id = %s RETURNING *",
                                    (*fills.values(), existing))
        return row, False
    row = inserted[0]
    if status == "succeeded":
        await _claim_keys(ctx, row["id"], keys)
        if row["payment_intent_id"]:
            _wake_waiting(ctx, row["payment_intent_id"])
        row = await apply_reversals(ctx, row)  # a refund or lost dispute that arrived first
    hook = {"succeeded": "payment_succeeded", "failed": "payment_failed"}.get(status)
    if hook:
        await ctx.announce(hook, payment=Payment.from_row(row))
    return row, True


async def user_for_charge(ctx: StripeEventContext, charge_id: str | None, payment_intent_id: str | None):
    """The user who paid a charge, from the payments recorded for it."""
    for column, value in (("charge_id", charge_id), ("payment_intent_id", payment_intent_id)):
        if value:
            user = await ctx.tx.fetchval(
                f"SELECT user_id FROM payments WHERE {column} = %s AND user_id IS NOT NULL LIMIT 1", (value,)
            )
            if user:
                return user
    return None


async def record_dispute(ctx: StripeEventContext, dispute: dict, user_id: str | None,
                         charge_id: str | None, payment_intent_id: str | None) -> bool:
    rows = await ctx.tx.fetchall(
        "INSERT INTO disputes (id, user_id, charge_id, payment_intent_id, amount, currency, reason, "
        "status, source_event_id, created, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (dispute["id"], user_id, charge_id, payment_intent_id, int(dispute.get("amount") or 0),
         str(dispute.get("currency") or "").lower(), dispute.get("reason"), dispute.get("status"),
         ctx.event_id, int(dispute.get("created") or ctx.created), ctx.now),
    )
    if not rows:
        return False
    ctx.tx.defer(
        "INSERT INTO review_flags (user_id, reason, reference, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (reference) DO NOTHING",
        (user_id, f"dispute {dispute.get('reason') or ''}".strip(), f"dispute:{dispute['id']}", ctx.now),
    )
    return True


async def record_commission(ctx: StripeEventContext, payment: Payment | dict, referrer_id: str,
                            rate: float) -> Commission | None:
    """The referrer's share of a payment (rounded down to the smallest currency unit), once per
    payment: the commission as stored, or None when this payment already had one, or when it
    was already fully refunded or lost in a dispute (nothing is earned; see
    `vibe.billing.refunds`). `payment` is the `payment_succeeded` hook's `Payment` (or a
    payments row, as `record_payment` returns)."""
    if not isinstance(payment, Payment):
        payment = Payment.from_row(payment)
    if await reversal_due(ctx, payment.id):
        return None
    amount = int(payment.amount * rate)
    rows = await ctx.tx.fetchall(
        "INSERT INTO commissions (payment_id, referrer_id, referred_user_id, amount, currency, rate, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING RETURNING id",
        (payment.id, referrer_id, payment.user_id, amount, payment.currency, rate, ctx.now),
    )
    if not rows:
        return None
    return Commission(id=rows[0]["id"], referrer_id=referrer_id, referred_user_id=payment.user_id,
                      payment_id=payment.id, amount=amount, currency=payment.currency, rate=rate)

