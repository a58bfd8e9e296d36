"""One payment is one payment on API 2025-03-31 (basil) and later, where only invoice_payment.paid
links an invoice to its PaymentIntent: every arrival order, redelivery, replay, invoice.paid."""

import itertools
import json

import pytest
from conftest import FIXTURES, load_data, make_event
from stripe_support import CUSTOMER, fixture, link_user

from vibe.billing.keys import DISPATCHER

INVOICE, INTENT, CHARGE = "in_basil0000000000000001", "pi_basil0000000000000001", "ch_basil0000000000000001"
T0 = 1_750_000_000


def basil_invoice(event_type="invoice.payment_succeeded", created=T0, **changes):
    """The basil-data invoice (no payment_intent, charge or paid; its subscription under
    `parent`), paid: 20.00 USD by the linked customer."""
    invoice = load_data("invoice.payment_failed")["object"]
    invoice.update({"id": INVOICE, "customer": CUSTOMER, "status": "paid", "amount_due": 2000, "amount_paid": 2000,
                    "amount_remaining": 0, "currency": "usd", "attempted": True, **changes})
    assert not {"payment_intent", "charge", "paid"} & invoice.keys()
    return make_event(event_type, invoice, created=created, api_version="2025-03-31.basil")


def basil_intent(created=T0, **changes):
    """Stripe's own PaymentIntent (openapi fixtures: no `invoice` field), succeeded."""
    intent = json.loads((FIXTURES / "objects" / "payment_intent.json").read_text())
    assert "invoice" not in intent
    intent.update({"id": INTENT, "status": "succeeded", "amount": 2000, "amount_received": 2000,
                   "currency": "usd", "customer": CUSTOMER, "latest_charge": CHARGE, **changes})
    return make_event("payment_intent.succeeded", intent, created=created, api_version="2025-03-31.basil")


def invoice_payment(shape="basil", created=T0):
    """`invoice_payment.paid`: the PaymentIntent under `payment` (basil), or at the top level with
    the charge (later versions, as Stripe's API reference shows them)."""
    obj = {"id": "inpay_basil000000000001", "object": "invoice_payment", "amount_paid": 2000,
           "amount_requested": 2000, "created": created, "currency": "usd", "invoice": INVOICE,
           "is_default": True, "livemode": False, "status": "paid",
           "status_transitions": {"canceled_at": None, "paid_at": created}}
    if shape == "basil":
        obj["payment"] = {"type": "payment_intent", "payment_intent": INTENT}
    else:
        obj.update(amount_overpaid=0, payment_intent=INTENT, charge=CHARGE)
    return make_event("invoice_payment.paid", obj, created=created,
                      api_version="2025-03-31.basil" if shape == "basil" else "2025-11-17.clover")


async def paying_referred_user(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("referrer", "ref@example.com", "VIBEREF"))
    await link_user(service)
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = %s", ("referrer", "user-1"))


async def money(service):
    """Payments, receipts queued and commissions, as the database has them."""
    user = await service.user("user-1")
    receipts = await service.db.fetchval(
        "SELECT COUNT(*) FROM email_messages WHERE type = 'payment_confirmation' AND user_id = 'user-1'")
    commissions = (await service.user("referrer"))["commissions"]
    return user["payments"], int(receipts), commissions


async def assert_one_payment(service, *, charge=True):
    payments, receipts, commissions = await money(service)
    assert [(p["amount"], p["currency"], p["status"], p["invoice_id"], p["payment_intent_id"])
            for p in payments] == [(2000, "usd", "succeeded", INVOICE, INTENT)]
    assert payments[0]["subscription_id"] == "sub_1234" and payments[0]["kind"] == "invoice"
    if charge:
        assert payments[0]["charge_id"] == CHARGE
    assert receipts == 1
    assert [(c["amount"], c["payment_id"]) for c in commissions] == [(400, payments[0]["id"])]


ORDERS = list(itertools.permutations(("invoice", "intent", "link")))


@pytest.mark.parametrize("shape", ["basil", "later"])
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
async def test_every_arrival_order_is_one_payment_one_receipt_one_commission(service, order, shape):
    await paying_referred_user(service)
    events = {"invoice": basil_invoice(created=T0 + 1), "intent": basil_intent(created=T0),
              "link": invoice_payment(shape, created=T0 + 2)}
    for name in order:
        await service.deliver(events[name])
    await service.settle()
    for event in events.values():  # none is left waiting: the link woke the PaymentIntent
        assert (await service.event_row(event["id"]))["status"] == "processed"
    await assert_one_payment(service)

    # Redelivered, replayed, and invoice.paid besides: still one of each.
    await service.deliver(*events.values())
    await service.app[DISPATCHER].process_ids([e["id"] for e in events.values()])
    paid = basil_invoice("invoice.paid", created=T0 + 3)
    await service.deliver(paid)
    assert (await service.event_row(paid["id"]))["status"] == "processed"
    await assert_one_payment(service)


@pytest.mark.parametrize("first", ["invoice.paid", "invoice.payment_succeeded"])
async def test_invoice_paid_and_payment_succeeded_both_arriving_record_once(service, first):
    await paying_referred_user(service)
    second = "invoice.payment_succeeded" if first == "invoice.paid" else "invoice.paid"
    await service.deliver(basil_invoice(first, created=T0), basil_invoice(second, created=T0))
    await service.deliver(basil_intent(created=T0 + 1))  # parked until the link
    await service.deliver(invoice_payment(created=T0 + 2))
    await service.settle()
    await assert_one_payment(service)


async def test_an_invoice_listing_its_payments_links_them_itself(service):
    await paying_referred_user(service)
    intent = basil_intent()
    await service.deliver(intent)
    row = await service.event_row(intent["id"])
    assert row["status"] == "waiting" and "invoice_payment.paid" in row["note"]
    payments = {"object": "list", "data": [invoice_payment("later")["data"]["object"]], "has_more": False}
    await service.deliver(basil_invoice(created=T0 + 1, payments=payments))
    await service.settle()
    assert (await service.event_row(intent["id"]))["status"] == "processed"
    await assert_one_payment(service)


async def test_a_payment_intent_of_no_invoice_is_recorded_after_the_wait(service):
    await paying_referred_user(service)
    intent = basil_intent(id="pi_standalone000000000001", latest_charge="ch_standalone")
    await service.deliver(intent)
    assert (await money(service))[0] == []
    # Its wait (LINK_WAIT_SECONDS from arrival) has passed with no invoice claiming it.
    await service.db.execute("UPDATE stripe_events SET received_at = received_at - 3600, next_attempt_at = 0 "
                             "WHERE id = %s", (intent["id"],))
    await service.settle()
    assert (await service.event_row(intent["id"]))["status"] == "processed"
    payments, receipts, commissions = await money(service)
    assert [(p["kind"], p["amount"], p["payment_intent_id"]) for p in payments] == [
        ("payment_intent", 2000, "pi_standalone000000000001")]
    assert receipts == 1 and len(commissions) == 1


async def test_a_checkout_payment_wakes_its_waiting_payment_intent(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("chris", "chris@gorails.com", "VIBECHRIS"))
    data = load_data("checkout.session.completed")
    session = data["object"]
    session.update(mode="payment", payment_intent="pi_checkout00000000000001", amount_total=1900)
    intent = basil_intent(id="pi_checkout00000000000001", customer=session["customer"], amount=1900,
                          amount_received=1900)
    await service.deliver(intent)
    await service.deliver(make_event("checkout.session.completed", session, created=T0 + 1))
    await service.settle()
    assert (await service.event_row(intent["id"]))["status"] == "processed"
    payments = (await service.user("chris"))["payments"]
    assert [(p["kind"], p["amount"], p["payment_intent_id"]) for p in payments] == [
        ("checkout", 1900, "pi_checkout00000000000001")]


async def test_older_shapes_still_make_one_payment_in_either_order(service):
    await paying_referred_user(service)
    intent = fixture("payment_intent.succeeded", created=T0, customer=CUSTOMER,
                     invoice="in_000000000000000000000000")
    await service.deliver(intent, fixture("invoice.payment_succeeded", created=T0 + 1))
    payments, receipts, commissions = await money(service)
    assert [(p["payment_intent_id"], p["invoice_id"]) for p in payments] == [
        ("pi_000000000000000000000000", "in_000000000000000000000000")]
    assert receipts == 1 and len(commissions) == 1
    # A PaymentIntent that says it has no invoice (`invoice: null`, older versions) records at once.
    alone = fixture("payment_intent.succeeded", created=T0 + 2, customer=CUSTOMER, id="pi_alone", invoice=None)
    await service.deliver(alone)
    assert (await service.event_row(alone["id"]))["status"] == "processed"
    assert len((await money(service))[0]) == 2
