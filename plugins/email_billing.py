"""Billing mail: receipts, failed-payment notices, expiring subscriptions, referral commissions.

Each is queued in the transaction that recorded the money, keyed by the payment or commission
id: a Stripe event delivered twice or replayed records nothing new and so queues nothing new.
"""

from vibe.api import EmailTemplate, enqueue_for, hookimpl

MONEY = {"amount": int, "currency": str}


@hookimpl
def register_email_templates():
    return [
        EmailTemplate(
            name="payment_confirmation", category="transactional", required=MONEY,
            optional={"description": str, "reference": str, "paid_at": (int, float), "invoice_url": str},
            description="A receipt for money received.",
            sample={"amount": 2900, "currency": "usd", "description": "Pro (monthly)", "reference": "in_1Abc",
                    "paid_at": 1764115200, "invoice_url": "https://invoice.stripe.com/i/example"},
        ),
        EmailTemplate(
            name="payment_failed", category="transactional", required=MONEY,
            optional={"reason": str, "reference": str, "update_url": str, "next_attempt_at": (int, float)},
            description="A payment attempt failed; asks for a new payment method.",
            sample={"amount": 2900, "currency": "eur", "reason": "Your card was declined",
                    "next_attempt_at": 1764374400},
        ),
        EmailTemplate(
            name="subscription_expiring", category="engagement", required={"period_end": (int, float)},
            optional={"tier": str}, description="A subscription set to cancel ends soon.",
            sample={"period_end": 1764374400, "tier": "pro"},
        ),
        EmailTemplate(
            name="referral_commission", category="engagement", required=MONEY,
            optional={"rate": (int, float), "referred_name": str},
            description="A referrer earned a commission.", sample={"amount": 580, "currency": "usd", "rate": 0.2},
        ),
    ]


@hookimpl
async def payment_succeeded(ctx, payment):
    data = {"amount": int(payment["amount"]), "currency": payment["currency"] or "usd",
            "paid_at": int(payment.get("created") or ctx.now)}
    reference = payment.get("invoice_id") or payment.get("payment_intent_id") or payment.get("checkout_session_id")
    if reference:
        data["reference"] = reference
    await enqueue_for(ctx, payment["user_id"], "payment_confirmation", data, f"payment_confirmation:{payment['id']}")


@hookimpl
async def payment_failed(ctx, payment):
    data = {"amount": int(payment["amount"]), "currency": payment["currency"] or "usd"}
    if payment.get("failure_message"):
        data["reason"] = payment["failure_message"]
    if payment.get("invoice_id"):
        data["reference"] = payment["invoice_id"]
    await enqueue_for(ctx, payment["user_id"], "payment_failed", data, f"payment_failed:{payment['id']}")


@hookimpl
async def commission_earned(ctx, commission):
    data = {"amount": int(commission["amount"]), "currency": commission["currency"] or "usd"}
    if commission.get("rate") is not None:
        data["rate"] = float(commission["rate"])
    await enqueue_for(ctx, commission["referrer_id"], "referral_commission", data,
                      f"referral_commission:{commission['id']}")
