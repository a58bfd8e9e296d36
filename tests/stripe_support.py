"""Stripe events for the tests: the fixtures with fresh ids and changes, and a linked learner."""

import uuid

from conftest import load_data, load_event, make_event

CUSTOMER = "cus_00000000000000"


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
