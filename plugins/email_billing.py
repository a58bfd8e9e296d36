"""Billing mail: receipts, failed-payment notices, expiring subscriptions, referral commissions,
and the administrator's dispute alert.

Each is queued in the transaction that recorded the money, keyed by the payment, commission or
dispute id: a Stripe event delivered twice or replayed records nothing new and so queues
nothing new.
"""

from urllib.parse import quote

from vibe.api import EmailTemplate, Field, enqueue_for, hookimpl, object_id

MONEY = {"amount": Field("int", required=True, minimum=0, message="must not be negative",
                         description="in the currency's smallest unit"),
         "currency": Field("str", required=True, pattern="[A-Za-z]{3}", strip=False,
                           message="expected a three-letter ISO code")}
TEXT, TIME = Field("str"), Field("time", description="Unix seconds or ISO 8601")
LINK = Field("str", max_length=2000, strip=False, description="an https URL (http too in development)")


@hookimpl
def register_email_templates():
    return [
        EmailTemplate(
            name="payment_confirmation", category="transactional",
            data={**MONEY, "description": TEXT, "reference": TEXT, "paid_at": TIME, "invoice_url": LINK},
            urls=("invoice_url",), preference="payment_emails",
            description="A receipt for money received.",
            sample={"amount": 2900, "currency": "usd", "description": "Pro (monthly)", "reference": "in_1Abc",
                    "paid_at": 1764115200, "invoice_url": "https://invoice.stripe.com/i/example"},
        ),
        EmailTemplate(
            name="payment_failed", category="transactional",
            data={**MONEY, "reason": TEXT, "reference": TEXT, "update_url": LINK, "next_attempt_at": TIME},
            urls=("update_url",), preference="payment_emails",
            description="A payment attempt failed; asks for a new payment method.",
            sample={"amount": 2900, "currency": "eur", "reason": "Your card was declined",
                    "next_attempt_at": 1764374400},
        ),
        EmailTemplate(
            name="subscription_expiring", category="engagement",
            data={"period_end": Field("time", required=True, description="Unix seconds or ISO 8601"), "tier": TEXT},
            description="A subscription set to cancel ends soon.", preference="billing_emails",
            sample={"period_end": 1764374400, "tier": "pro"},
        ),
        EmailTemplate(
            name="referral_commission", category="engagement",
            data={**MONEY, "rate": Field("number"), "referred_name": TEXT},
            description="A referrer earned a commission.", sample={"amount": 580, "currency": "usd", "rate": 0.2},
            preference="referral_emails",
        ),
        EmailTemplate(
            name="dispute_alert", category="transactional",
            data={**MONEY, "dispute_id": Field("str", required=True), "reason": TEXT, "charge_id": TEXT,
                  "customer_id": TEXT, "user_id": TEXT, "user_email": TEXT, "evidence_due_by": TIME,
                  "dashboard_url": LINK},
            description="To the administrator (user_id \"admin\", ADMIN_EMAIL): a customer disputed a charge.",
            sample={"amount": 4900, "currency": "eur", "reason": "fraudulent", "dispute_id": "dp_1Abc",
                    "charge_id": "ch_1Abc", "customer_id": "cus_1Abc", "user_email": "learner@example.com",
                    "evidence_due_by": 1764979199, "dashboard_url": "https://dashboard.stripe.com/disputes/dp_1Abc"},
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


@hookimpl
async def dispute_created(ctx, dispute):
    """Every new dispute alerts the administrator, once (keyed by the dispute), in its transaction."""
    stripe = getattr(ctx, "event", {}).get("data", {}).get("object") or {}  # the event's dispute, if any
    stripe = stripe if stripe.get("id") == dispute.id else {}
    profile = await ctx.profile(dispute.user_id) if dispute.user_id else None
    charge = stripe.get("charge") if isinstance(stripe.get("charge"), dict) else {}  # expanded, or an id
    test = "" if stripe.get("livemode", ctx.settings.env == "production") else "test/"
    found = {"reason": dispute.reason, "charge_id": dispute.charge_id, "user_id": dispute.user_id,
             "customer_id": object_id(charge.get("customer")) or (profile or {}).get("stripe_customer_id"),
             "user_email": (profile or {}).get("email"),
             "evidence_due_by": (stripe.get("evidence_details") or {}).get("due_by"),
             "dashboard_url": f"https://dashboard.stripe.com/{test}disputes/{quote(dispute.id, safe='')}"}
    data = {"amount": int(dispute.amount or 0), "currency": dispute.currency or "usd", "dispute_id": dispute.id,
            **{k: v for k, v in found.items() if v}}
    await enqueue_for(ctx, "admin", "dispute_alert", data, f"dispute_alert:{dispute.id}", priority="high")
