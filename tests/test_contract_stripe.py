"""CONTRACT.md, stripe-webhook: the platform's own Checkout Sessions, customers, subscriptions and
PaymentIntents name their learner in `metadata.userId` (camelCase) and a referred learner's
referrer in `metadata.referralCode`. Signed HTTP deliveries, on both databases."""

import pytest
from stripe_support import fixture

LEARNER, REFERRER, OTHER = "0b6a1c1e-platform-learner", "referrer-1", "referrer-2"
CUSTOMER, SUBSCRIPTION, INVOICE = "cus_Platform0001", "sub_Platform0001", "in_Platform0001"


def checkout(created: int, **metadata) -> dict:
    """A subscription checkout as the platform creates it: no client_reference_id, metadata only."""
    return fixture("checkout.session.completed", created=created, id=f"cs_test_platform_{created}",
                   customer=CUSTOMER, subscription=SUBSCRIPTION, mode="subscription", payment_status="paid",
                   invoice=INVOICE, customer_email="learner@example.com", metadata={"userId": LEARNER, **metadata})


def invoice(created: int) -> dict:
    return fixture("invoice.payment_succeeded", created=created, id=INVOICE, customer=CUSTOMER,
                   subscription=SUBSCRIPTION, payment_intent="pi_Platform0001", amount_paid=4900, currency="eur")


async def referrers(service, *codes: tuple[str, str]) -> None:
    for user_id, code in codes:
        await service.db.execute(
            "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
            (user_id, f"{user_id}@example.com", code))


async def test_the_answer_is_received_true(service):
    response = await service.post_event(checkout(1_700_000_000))
    assert response.status == 200 and (await response.json())["received"] is True


async def test_checkout_with_metadata_user_id_links_the_learner(service):
    await service.deliver(checkout(1_700_000_000))
    user = await service.user(LEARNER)
    assert user is not None and user["stripe_customer_id"] == CUSTOMER
    assert user["stripe_subscription_id"] == SUBSCRIPTION


@pytest.mark.parametrize("kind", ["customer", "subscription", "payment_intent"])
async def test_customers_subscriptions_and_payment_intents_read_metadata_user_id(service, kind):
    meta = {"userId": LEARNER}
    if kind == "customer":
        event = fixture("customer.created", created=1_700_000_000, id=CUSTOMER, email="l@example.com", metadata=meta)
    elif kind == "subscription":
        event = fixture("customer.subscription.created", created=1_700_000_000, id=SUBSCRIPTION,
                        customer=CUSTOMER, metadata=meta)
    else:
        event = fixture("payment_intent.succeeded", created=1_700_000_000, customer=CUSTOMER, invoice=None,
                        metadata=meta)
    await service.deliver(event)
    user = await service.user(LEARNER)
    assert user is not None and user["stripe_customer_id"] == CUSTOMER
    if kind == "subscription":
        assert user["tier"] == "pro"
    row = await service.event_row(event["id"])
    assert row["status"] in ("processed", "waiting"), row


async def test_an_invoice_reads_its_subscriptions_metadata_on_new_api_versions(service):
    event = invoice(1_700_000_000)
    event["data"]["object"]["parent"] = {"type": "subscription_details", "subscription_details": {
        "subscription": SUBSCRIPTION, "metadata": {"userId": LEARNER}}}
    await service.deliver(event)
    user = await service.user(LEARNER)
    assert user is not None and [p["amount"] for p in user["payments"]] == [4900]


async def test_client_reference_id_comes_before_metadata(service):
    event = checkout(1_700_000_000)
    event["data"]["object"]["client_reference_id"] = "by-reference"
    await service.deliver(event)
    assert (await service.user("by-reference"))["stripe_customer_id"] == CUSTOMER
    assert await service.user(LEARNER) is None


@pytest.mark.parametrize("order", ["checkout first", "invoice first"])
async def test_referral_code_attributes_the_learner_and_the_first_invoice_pays(service, order):
    await referrers(service, (REFERRER, "VIBEREF00001"))
    session = checkout(1_700_000_000, referralCode="viberef00001")  # codes are not case-sensitive
    link = fixture("customer.created", created=1_699_999_999, id=CUSTOMER, email="learner@example.com",
                   metadata={"userId": LEARNER})
    events = [session, invoice(1_700_000_001)]
    await service.deliver(link, *(events if order == "checkout first" else events[::-1]))
    await service.deliver(session, invoice(1_700_000_001))  # redelivered: nothing new
    assert (await service.user(LEARNER))["referred_by"] == REFERRER
    commissions = (await service.user(REFERRER))["commissions"]
    assert [(c["amount"], c["currency"], c["referred_user_id"]) for c in commissions] == [(980, "eur", LEARNER)]


async def test_a_referral_code_never_overrides_an_earlier_referrer(service):
    await referrers(service, (REFERRER, "VIBEREF00001"), (OTHER, "VIBEREF00002"))
    await service.deliver(checkout(1_700_000_000, referralCode="VIBEREF00001"))
    await service.deliver(checkout(1_700_000_010, referralCode="VIBEREF00002"), invoice(1_700_000_011))
    assert (await service.user(LEARNER))["referred_by"] == REFERRER
    assert len((await service.user(REFERRER))["commissions"]) == 1
    assert (await service.user(OTHER))["commissions"] == []


async def test_a_learner_is_never_their_own_referrer_and_unknown_codes_change_nothing(service):
    await service.deliver(checkout(1_700_000_000))
    own = (await service.user(LEARNER))["referral_code"]
    await service.deliver(checkout(1_700_000_010, referralCode=own), checkout(1_700_000_020, referralCode="NOPE"),
                          invoice(1_700_000_030))
    user = await service.user(LEARNER)
    assert user["referred_by"] is None and len(user["payments"]) == 1
