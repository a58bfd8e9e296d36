"""Each of the nine event types, through signed HTTP deliveries, on the real fixtures."""

from stripe_support import CUSTOMER, basil, fixture, link_user


async def test_customer_created_links_by_metadata_and_creates_the_profile(service):
    await link_user(service)
    user = await service.user("user-1")
    assert user["stripe_customer_id"] == CUSTOMER and user["email"] == "learner@example.com"
    assert user["tier"] == "free" and user["referral_code"].startswith("VIBE")


async def test_customer_created_links_by_email_or_is_ignored(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("user-by-email", "known@example.com", "VIBEKNOWN"),
    )
    known = fixture("customer.created", created=1_700_000_000, id="cus_known", email="Known@Example.com")
    stranger = fixture("customer.created", created=1_700_000_000, id="cus_stranger", email="nobody@example.com")
    await service.deliver(known, stranger)
    assert (await service.user("user-by-email"))["stripe_customer_id"] == "cus_known"
    row = await service.event_row(stranger["id"])
    assert row["status"] == "ignored" and "no user" in row["note"]


async def test_subscription_lifecycle_sets_and_clears_the_tier(service):
    await link_user(service)
    await service.deliver(fixture("customer.subscription.created", created=1_700_000_100))
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("pro", "active")
    assert user["current_period_end"] == 1650998510 and user["cancel_at_period_end"] is False
    assert user["subscriptions"][0]["amount"] == 1500 and user["subscriptions"][0]["billing_interval"] == "month"

    await service.deliver(fixture("customer.subscription.updated", created=1_700_000_200, cancel_at_period_end=True))
    user = await service.user("user-1")
    assert user["tier"] == "pro" and user["cancel_at_period_end"] is True

    await service.deliver(fixture("customer.subscription.deleted", created=1_700_000_300))
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("free", "canceled")


async def test_tier_comes_from_metadata_lookup_key_or_the_price_map(start_service):
    service = await start_service(STRIPE_PRICE_TIERS="prod_00000000000000=starter")
    await link_user(service)
    cases = [({"metadata": {"tier": "expert"}}, "expert"), ({"lookup_key": "pro_monthly"}, "pro"), ({}, "starter")]
    for i, (price_changes, tier) in enumerate(cases):
        event = fixture("customer.subscription.updated", created=1_700_000_100 + i)
        event["data"]["object"]["items"]["data"][0]["price"].update(price_changes)
        await service.deliver(event)
        assert (await service.user("user-1"))["tier"] == tier


async def test_statuses_decide_whether_the_tier_is_granted(service):
    await link_user(service)
    for i, (status, tier) in enumerate([("trialing", "pro"), ("past_due", "pro"), ("unpaid", "free"),
                                        ("active", "pro"), ("incomplete_expired", "free")]):
        await service.deliver(fixture("customer.subscription.updated", created=1_700_000_100 + i, status=status))
        user = await service.user("user-1")
        assert (user["tier"], user["subscription_status"]) == (tier, status)


async def test_unmapped_price_fails_loudly_and_waits_for_configuration(start_service):
    service = await start_service(STRIPE_PRICE_TIERS="", STRIPE_MAX_ATTEMPTS="2")
    await link_user(service)
    event = fixture("customer.subscription.created", created=1_700_000_100)
    await service.deliver(event)
    row = await service.wait_status(event["id"], "failed")  # not retried into the dead letter
    assert row["attempts"] == 0 and row["next_attempt_at"] is None and "no tier for price" in row["last_error"]
    assert (await service.user("user-1"))["tier"] == "free"


async def test_invoice_and_payment_intent_record_the_money_once_and_pay_the_referrer(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("referrer", "ref@example.com", "VIBEREF"),
    )
    await link_user(service)
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = %s", ("referrer", "user-1"))
    invoice = fixture("invoice.payment_succeeded", created=1_700_000_100)
    intent = fixture("payment_intent.succeeded", created=1_700_000_101, customer=CUSTOMER)
    await service.deliver(invoice, intent, invoice)
    user = await service.user("user-1")
    assert [(p["amount"], p["currency"], p["status"]) for p in user["payments"]] == [(2000, "usd", "succeeded")]
    assert user["payments"][0]["invoice_id"] == "in_000000000000000000000000"
    referrer = await service.user("referrer")
    assert [(c["amount"], c["currency"], c["referred_user_id"]) for c in referrer["commissions"]] == [
        (400, "usd", "user-1")
    ]


async def test_payment_intent_first_then_invoice_is_still_one_payment(service):
    await link_user(service)
    await service.deliver(fixture("payment_intent.succeeded", created=1_700_000_100, customer=CUSTOMER))
    await service.deliver(fixture("invoice.payment_succeeded", created=1_700_000_101))
    payments = (await service.user("user-1"))["payments"]
    assert len(payments) == 1 and payments[0]["invoice_id"] == "in_000000000000000000000000"


async def test_invoice_failure_is_recorded_and_marks_past_due(service):
    await link_user(service)
    await service.deliver(fixture("customer.subscription.created", created=1_700_000_100))
    failed = fixture("invoice.payment_failed", created=1_700_000_200, subscription="sub_000000000000000000000000")
    await service.deliver(failed, failed)
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("pro", "past_due")
    assert [(p["status"], p["amount"]) for p in user["payments"]] == [("failed", 2000)]


async def test_checkout_payment_mode_links_the_named_user_and_records_once(service):
    event = fixture("checkout.session.completed", created=1_700_000_000, client_reference_id="buyer-1",
                    customer_details={"email": "buyer@example.com", "name": "Buyer"})
    await service.deliver(event, event)
    user = await service.user("buyer-1")
    assert user["email"] == "buyer@example.com" and user["stripe_customer_id"] == CUSTOMER
    assert [(p["kind"], p["amount"]) for p in user["payments"]] == [("checkout", 3000)]


async def test_dispute_is_recorded_and_the_user_flagged(service):
    await link_user(service)
    await service.deliver(fixture("invoice.payment_succeeded", created=1_700_000_100))
    await service.deliver(fixture("charge.dispute.created", created=1_700_000_200))
    user = await service.user("user-1")
    assert user["needs_review"] is True
    assert [(d["id"], d["amount"], d["reason"]) for d in user["disputes"]] == [
        ("dp_000000000000000000000000", 100, "fraudulent")
    ]
    flags = await service.db.fetchall("SELECT user_id, reference FROM review_flags")
    assert flags == [{"user_id": "user-1", "reference": "dispute:dp_000000000000000000000000"}]


async def test_newer_api_shapes_checkout_subscription_and_invoice(service):
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("chris", "chris@gorails.com", "VIBECHRIS"),
    )
    await service.deliver(basil("checkout.session.completed", "checkout.session.completed", created=1_700_000_000))
    user = await service.user("chris")
    assert user["stripe_customer_id"] == "cus_M5wW9RPFk9xNZ5"
    # A subscription whose period end lives on its items, priced FFBEGINNER (starter).
    sub = basil("customer.subscription.updated", "customer.subscription.updated", created=1_700_000_100,
                customer="cus_M5wW9RPFk9xNZ5", status="active")
    await service.deliver(sub)
    user = await service.user("chris")
    assert (user["tier"], user["current_period_end"]) == ("starter", 1488987924)
    # An invoice whose subscription sits under parent.subscription_details.
    failed = basil("invoice.payment_failed", "invoice.payment_failed", created=1_700_000_200,
                   customer="cus_M5wW9RPFk9xNZ5", amount_due=300)
    failed["data"]["object"]["parent"]["subscription_details"]["subscription"] = "sub_00000000000000"
    await service.deliver(failed)
    user = await service.user("chris")
    assert user["subscription_status"] == "past_due"
    assert user["payments"][0]["subscription_id"] == "sub_00000000000000"
