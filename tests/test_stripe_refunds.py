"""Refunds and lost disputes: recorded against their payment, the referral commission reversed by
a reversal row, net figures in `users show` and the business figures; once, in any order."""

import itertools

import pytest
from analytics_support import get
from conftest import make_event
from stripe_support import CUSTOMER, fixture, link_user

from vibe.analytics.queries import refresh_business_views
from vibe.billing.keys import DISPATCHER

CHARGE, INTENT, INVOICE = "ch_000000000000000000000000", "pi_000000000000000000000000", "in_000000000000000000000000"
T0 = 1_700_000_100


def refund(amount_refunded, created, *, full=None):
    charge = {"id": CHARGE, "object": "charge", "amount": 2000, "amount_captured": 2000,
              "amount_refunded": amount_refunded, "currency": "usd", "customer": CUSTOMER, "paid": True,
              "payment_intent": INTENT, "captured": True, "status": "succeeded",
              "refunded": amount_refunded >= 2000 if full is None else full}
    return make_event("charge.refunded", charge, created=created)


def dispute_closed(status, created, dispute_id="dp_000000000000000000000000"):
    event = fixture("charge.dispute.created", created=created,
                    id=dispute_id, amount=2000, status=status, payment_intent=INTENT)
    event["type"] = "charge.dispute.closed"
    return event


async def referred_payer(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("referrer", "ref@example.com", "VIBEREF"))
    await link_user(service)
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = %s", ("referrer", "user-1"))


async def figures(service):
    payer, referrer = await service.user("user-1"), await service.user("referrer")
    commissions = await service.db.fetchall("SELECT amount FROM commissions ORDER BY id")
    reversals = await service.db.fetchall("SELECT amount, reason, commission_id FROM commission_reversals ORDER BY id")
    return payer, referrer, [c["amount"] for c in commissions], reversals


@pytest.mark.parametrize("order", list(itertools.permutations(("invoice", "intent", "refund"))),
                         ids=lambda o: "-".join(o))
async def test_a_full_refund_in_any_order_reverses_the_commission_once(service, order):
    await referred_payer(service)
    events = {"invoice": fixture("invoice.payment_succeeded", created=T0),
              "intent": fixture("payment_intent.succeeded", created=T0 + 1, customer=CUSTOMER),
              "refund": refund(2000, T0 + 2)}
    for name in order:
        await service.deliver(events[name])
    await service.deliver(*events.values())  # redelivered
    await service.app[DISPATCHER].process_ids([e["id"] for e in events.values()])  # replayed
    payer, referrer, commissions, reversals = await figures(service)
    [payment] = payer["payments"]
    assert (payment["amount"], payment["amount_refunded"], payment["net"]) == (2000, 2000, 0)
    assert payer["net"]["paid"] == {"usd": 0}
    assert referrer["net"]["commissions"] in ({"usd": 0}, {})
    if order[0] != "refund":  # the commission was earned, then reversed by a row
        assert commissions == [400] and [(r["amount"], r["reason"]) for r in reversals] == [(-400, "refunded")]
        assert [c["amount"] for c in referrer["commission_reversals"]] == [-400]
    else:  # refunded before it was recorded: nothing earned, nothing to reverse
        assert commissions == [] and reversals == []


async def test_partial_refunds_count_once_and_keep_the_commission(service):
    await referred_payer(service)
    await service.deliver(fixture("invoice.payment_succeeded", created=T0))
    second, first = refund(1500, T0 + 20), refund(500, T0 + 10)
    await service.deliver(second, first, second)  # out of order and twice: the largest total wins
    payer, referrer, commissions, reversals = await figures(service)
    assert [(p["amount_refunded"], p["net"]) for p in payer["payments"]] == [(1500, 500)]
    assert payer["net"]["paid"] == {"usd": 500}
    assert commissions == [400] and reversals == [] and referrer["net"]["commissions"] == {"usd": 400}
    refunds = await service.db.fetchall("SELECT charge_id, amount_refunded, full_refund, payment_id FROM refunds")
    assert [(r["charge_id"], r["amount_refunded"], bool(r["full_refund"])) for r in refunds] == [(CHARGE, 1500, False)]
    assert refunds[0]["payment_id"] == payer["payments"][0]["id"]
    # Then the rest: a full refund reverses the commission.
    await service.deliver(refund(2000, T0 + 30))
    payer, referrer, commissions, reversals = await figures(service)
    assert payer["payments"][0]["net"] == 0 and [r["amount"] for r in reversals] == [-400]


@pytest.mark.parametrize("dispute_first", [False, True])
async def test_a_lost_dispute_reverses_the_commission_once(service, dispute_first):
    await referred_payer(service)
    paid = fixture("invoice.payment_succeeded", created=T0)
    lost = dispute_closed("lost", T0 + 50)
    for event in ([lost, paid] if dispute_first else [paid, lost]):
        await service.deliver(event)
    await service.deliver(lost, fixture("charge.dispute.created", created=T0 + 40, amount=2000,
                                        payment_intent=INTENT))  # its `created` late: no second row
    payer, _, commissions, reversals = await figures(service)
    [payment] = payer["payments"]
    assert (payment["amount_lost"], payment["net"]) == (2000, 0)
    assert [(d["status"], d["amount"]) for d in payer["disputes"]] == [("lost", 2000)]
    assert payer["needs_review"] is True
    flags = await service.db.fetchall("SELECT user_id, reference FROM review_flags")
    assert flags == [{"user_id": "user-1", "reference": "dispute:dp_000000000000000000000000"}]
    if dispute_first:
        assert commissions == [] and reversals == []
    else:
        assert commissions == [400] and [(r["amount"], r["reason"]) for r in reversals] == [(-400, "dispute_lost")]


async def test_a_won_dispute_changes_no_money(service):
    await referred_payer(service)
    await service.deliver(fixture("invoice.payment_succeeded", created=T0), dispute_closed("won", T0 + 50))
    payer, _, commissions, reversals = await figures(service)
    assert payer["payments"][0]["net"] == 2000 and payer["disputes"][0]["status"] == "won"
    assert commissions == [400] and reversals == []


async def test_a_basil_invoice_learns_its_refund_when_the_link_arrives(service):
    """A refund names the charge and PaymentIntent; a basil invoice names neither until
    invoice_payment.paid: the refund kept for the charge is applied then."""
    await referred_payer(service)
    invoice = fixture("invoice.payment_succeeded", created=T0)
    for gone in ("payment_intent", "charge", "paid"):
        invoice["data"]["object"].pop(gone)
    await service.deliver(invoice, refund(2000, T0 + 5))
    payer, *_ = await figures(service)
    assert payer["payments"][0]["net"] == 2000  # not yet known to be this payment's refund
    link = make_event("invoice_payment.paid", {"id": "inpay_1", "object": "invoice_payment", "invoice": INVOICE,
                                               "status": "paid", "amount_paid": 2000, "currency": "usd",
                                               "payment": {"type": "payment_intent", "payment_intent": INTENT}},
                      created=T0 + 6)
    await service.deliver(link)
    payer, _, _, reversals = await figures(service)
    assert payer["payments"][0]["net"] == 0 and [r["amount"] for r in reversals] == [-400]


async def test_business_figures_count_net_revenue(service):
    await referred_payer(service)
    day = T0 // 86400 * 86400
    await service.deliver(fixture("invoice.payment_succeeded", created=T0), refund(500, T0 + 5))
    await refresh_business_views(service.db)
    body = await get(service, "business", **{"from": day, "to": day + 86400})
    assert body["revenue"] == [{"currency": "usd", "amount": 1500, "payments": 1}]
    assert body["referral_revenue"] == [{"currency": "usd", "amount": 1500}]
