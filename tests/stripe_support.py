"""Stripe events for the tests: the fixtures with fresh ids and changes, a linked learner, and a
learner paying in the Stripe emulator."""

import uuid

from conftest import load_data, load_event, make_event

CUSTOMER = "cus_00000000000000"
USER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def fixture(name: str, created: float, **object_changes) -> dict:
    """A fixture event with a fresh id and `created` (whole seconds), and changes to its data.object."""
    event = load_event(name)
    event["id"] = f"evt_{uuid.uuid4().hex[:24]}"
    event["created"] = int(created)
    event["data"]["object"].update(object_changes)
    return event


def basil(name: str, event_type: str, *, created: int, **object_changes) -> dict:
    data = load_data(name)
    data["object"].update(object_changes)
    event = make_event(event_type, data["object"], created=created)
    event["data"] = data
    return event


async def link_user(service, user_id="user-1", email="learner@example.com", created=1_700_000_000):
    await service.deliver(fixture("customer.created", created=created, email=email,
                                  metadata={"user_id": user_id}))
    return user_id


async def learner_in_stripe(stripe, user_id=USER, email="lena@example.com"):
    """A learner who paid for pro in Stripe (the emulator) while vibe heard nothing of it."""
    await stripe.plan("price_pro_monthly", 2900, tier="pro")
    customer = await stripe.customer(email, user_id)
    sub = await stripe.subscribe(customer["id"], "price_pro_monthly", metadata={"userId": user_id})
    assert sub["status"] == "active"
    return customer, sub
