"""Billing mail: receipts, failed-payment notices, expiring subscriptions, referral commissions.

Each is queued in the transaction that recorded the money, keyed by the payment or commission
id: a Stripe event delivered twice or replayed records nothing new and so queues nothing new.
"""

from vibe.api import EmailTemplate, Field, enqueue_for, hookimpl

MONEY = {"amount": Field("int", required=True, minimum=0, message="must not be negative",
                         description="in the currency's smallest unit"),
         "currency": Field("str", required=True, pattern="[A-Za-z]{3}", strip=False,
                           message="expected a three-letter ISO code")}
TEXT, TIME = Field("str"), Field("number", description="Unix seconds")
LINK = Field("str", max_length=2000, strip=False, description="an https URL (http too in development)")


@hookimpl
def register_email_templates():
    return [
        EmailTemplate(
            name="payment_confirmation", category="transactional",
            data={**MONEY, "description": TEXT, "reference": TEXT, "paid_at": TIME, "invoice_url": LINK},
            urls=("invoice_url",),
            description="A receipt for money received.",
            sample={"amount": 2900, "currency": "usd", "description": "Pro (monthly)", "reference": "in_1Abc",
                    "paid_at": 1764115200, "invoice_url": "https://invoice.stripe.com/i/example"},
        ),
        EmailTemplate(
            name="payment_failed", category="transactional",
            data={**MONEY, "reason": TEXT, "reference": TEXT, "update_url": LINK, "next_attempt_at": TIME},
            urls=("update_url",),
            description="A payment attempt failed; asks for a new payment method.",
            sample={"amount": 2900, "currency": "eur", "reason": "Your card was declined",
                    "next_attempt_at": 1764374400},
        ),
        EmailTemplate(
            name="subscription_expiring", category="engagement",
            data={"period_end": Field("number", required=True, description="Unix seconds"), "tier": TEXT},
            description="A subscription set to cancel ends soon.",
            sample={"period_end": 1764374400, "tier": "pro"},
        ),
        EmailTemplate(
            name="referral_commission", category="engagement",
            data={**MONEY, "rate": Field("number"), "referred_name": TEXT},
            description="A referrer earned a commission.", sample={"amount": 580, "currency": "usd", "rate": 0.2},
        ),
    ]


@hookimpl
async def payment_succeeded(ctx, payment):
    data = {"amount": int(payment.amount), "currency": payment.currency or "usd",
            "paid_at": int(payment.created or ctx.now)}
    reference = payment.invoice_id or payment.payment_intent_id or payment.checkout_session_id
    if reference:
        data["reference"] = reference
    await enqueue_for(ctx, payment.user_id, "payment_confirmation", data, f"payment_confirmation:{payment.id}")


@hookimpl
async def payment_failed(ctx, payment):
    data = {"amount": int(payment.amount), "currency": payment.currency or "usd"}
    if payment.failure_message:
        data["reason"] = payment.failure_message
    if payment.invoice_id:
        data["reference"] = payment.invoice_id
    await enqueue_for(ctx, payment.user_id, "payment_failed", data, f"payment_failed:{payment.id}")


@hookimpl
async def commission_earned(ctx, commission):
    data = {"amount": int(commission.amount), "currency": commission.currency or "usd"}
    if commission.rate is not None:
        data["rate"] = float(commission.rate)
    await enqueue_for(ctx, commission.referrer_id, "referral_commission", data,
                      f"referral_commission:{commission.id}")
