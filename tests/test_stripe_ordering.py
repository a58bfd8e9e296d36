"""Late, out-of-order and early deliveries: older never overwrites newer; early events wait."""

import asyncio

from stripe_support import CUSTOMER, fixture, link_user


def sub_event(event_type: str, created: int, **changes) -> dict:
    return fixture(f"customer.subscription.{event_type}", created=created, **changes)


async def test_an_older_update_arriving_late_is_stale(service):
    await link_user(service)
    newer = sub_event("updated", 1_700_000_200, status="active")
    older = sub_event("created", 1_700_000_100, status="incomplete")
    await service.deliver(newer, older)
    assert (await service.user("user-1"))["tier"] == "pro"
    assert (await service.event_row(older["id"]))["status"] == "stale"


async def test_a_deletion_is_not_undone_by_an_update_that_arrives_after_it(service):
    await link_user(service)
    await service.deliver(sub_event("created", 1_700_000_100))
    deleted = sub_event("deleted", 1_700_000_300)
    late_update = sub_event("updated", 1_700_000_250, status="active")
    await service.deliver(deleted, late_update)
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("free", "canceled")


async def test_same_second_events_apply_in_lifecycle_order(service):
    """created < updated < deleted within one second, whatever order they arrive in."""
    await link_user(service)
    created = sub_event("created", 1_700_000_100, status="incomplete")
    updated = sub_event("updated", 1_700_000_100, status="active")
    await service.deliver(updated, created)
    user = await service.user("user-1")
    assert (user["tier"], user["subscription_status"]) == ("pro", "active")
    assert (await service.event_row(created["id"]))["status"] == "stale"
    deleted = sub_event("deleted", 1_700_000_150)
    same_second_update = sub_event("updated", 1_700_000_150, status="active")
    await service.deliver(deleted, same_second_update)
    assert (await service.user("user-1"))["tier"] == "free"


async def test_same_second_same_kind_events_apply_in_processing_order(service):
    await link_user(service)
    first = sub_event("updated", 1_700_000_100, cancel_at_period_end=False)
    second = sub_event("updated", 1_700_000_100, cancel_at_period_end=True)
    await service.deliver(first, second)
    assert (await service.user("user-1"))["cancel_at_period_end"] is True


async def test_a_late_invoice_failure_does_not_mark_a_newer_subscription_past_due(service):
    await link_user(service)
    await service.deliver(sub_event("updated", 1_700_000_300, status="active"))
    late_failure = fixture("invoice.payment_failed", created=1_700_000_100,
                           subscription="sub_000000000000000000000000")
    await service.deliver(late_failure)
    user = await service.user("user-1")
    assert user["subscription_status"] == "active"
    assert [p["status"] for p in user["payments"]] == ["failed"]  # the failure itself is still recorded


async def test_events_for_an_unlinked_customer_wait_and_apply_when_the_link_arrives(start_service):
    # A long poll interval: only the link's wake-up can make this fast.
    service = await start_service(STRIPE_POLL_SECONDS="30")
    subscription = sub_event("created", 1_700_000_100)
    invoice = fixture("invoice.payment_succeeded", created=1_700_000_101)
    for event in (subscription, invoice):
        assert (await service.post_event(event)).status == 200
    for event in (subscription, invoice):
        row = await service.wait_status(event["id"], "waiting")
        assert row["waiting_for"] == CUSTOMER
    assert await service.user("user-1") is None

    loop = asyncio.get_running_loop()
    started = loop.time()
    link = fixture("customer.created", created=1_700_000_200, metadata={"user_id": "user-1"})
    assert (await service.post_event(link)).status == 200  # no settle(): nothing else wakes the dispatcher
    for event in (subscription, invoice):
        await service.wait_status(event["id"], "processed", timeout=5)
    assert loop.time() - started < 5
    user = await service.user("user-1")
    assert user["tier"] == "pro" and len(user["payments"]) == 1


async def test_subscription_naming_its_user_in_metadata_does_not_wait(service):
    event = sub_event("created", 1_700_000_100, customer="cus_meta", metadata={"user_id": "meta-user"})
    await service.deliver(event)
    user = await service.user("meta-user")
    assert user["tier"] == "pro" and user["stripe_customer_id"] == "cus_meta"
