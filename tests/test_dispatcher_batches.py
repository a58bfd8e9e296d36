"""One dispatcher batch, many events (issue 17): the batch reads the versions and the linked
profiles once for all its events, and every event runs in a savepoint of its own, so a failing
event leaves the others' effects, each exactly once, and the order guard holds across it. Both
databases. The dispatcher's loops are off: each test runs the batches itself."""

import json
import time

import pytest
from conftest import make_event
from stripe_support import fixture

from vibe.billing.keys import DISPATCHER
from vibe.plugins.hookspecs import hookimpl

USERS = ("user-a", "user-b", "user-c")


class FailWhen:
    """A `subscription_changed` hook that raises for the changes `fails(user_id, change)` names."""

    def __init__(self, fails):
        self.fails = fails

    @hookimpl
    async def subscription_changed(self, ctx, user_id, change):
        if self.fails(user_id, change):
            raise RuntimeError(f"hook fails for {user_id} ({change.status})")


def sub_update(user_id: str, created: int, **changes) -> dict:
    return fixture("customer.subscription.updated", created=created, id=f"sub_{user_id}",
                   customer=f"cus_{user_id}", metadata={}, **changes)


async def start(start_service, fails=lambda user_id, change: False):
    service = await start_service(VIBE_STRIPE_WORKER="false", extra_plugins=(FailWhen(fails),))
    for user_id in USERS:  # linked, with an active subscription recorded at t=100
        await post(service, make_event("customer.created", {
            "id": f"cus_{user_id}", "object": "customer", "email": f"{user_id}@example.com",
            "metadata": {"user_id": user_id}}, created=1_700_000_000))
    await run_batch(service)
    for user_id in USERS:
        await post(service, fixture("customer.subscription.created", created=1_700_000_100, id=f"sub_{user_id}",
                                    customer=f"cus_{user_id}", status="active"))
    await run_batch(service)
    return service


async def post(service, *events):
    for event in events:
        assert (await service.post_event(event)).status == 200


async def run_batch(service) -> int:
    """One batch of whatever is due; how many events it claimed."""
    return await service.app[DISPATCHER].process_due()


async def status(service, event) -> str:
    return (await service.event_row(event["id"]))["status"]


async def analytics(service, event) -> list[dict]:
    """The properties of the subscription analytics events recorded for a Stripe event."""
    rows = await service.db.fetchall("SELECT properties FROM analytics_events WHERE message_id LIKE %s",
                                     (f"subscription:{event['id']}:%",))
    return [r["properties"] if isinstance(r["properties"], dict) else json.loads(r["properties"]) for r in rows]


async def make_due(service, event) -> None:
    await service.db.execute("UPDATE stripe_events SET next_attempt_at = %s WHERE id = %s", (time.time(), event["id"]))


async def test_a_failing_event_leaves_the_others_of_its_batch_applied_once(start_service):
    service = await start(start_service, fails=lambda user_id, change: (user_id, change.status) == ("user-b", "past_due"))
    events = [sub_update(u, 1_700_000_200, status="past_due") for u in USERS]
    await post(service, *events)
    assert await run_batch(service) == 3
    assert [await status(service, e) for e in events] == ["processed", "failed", "processed"]
    assert [len(await analytics(service, e)) for e in events] == [1, 0, 1]
    statuses = {u: (await service.user(u))["subscription_status"] for u in USERS}
    assert statuses == {"user-a": "past_due", "user-b": "active", "user-c": "past_due"}
    failed = await service.event_row(events[1]["id"])
    assert failed["attempts"] == 1 and "hook fails for user-b" in failed["last_error"]


async def test_a_newer_event_after_a_failed_one_in_the_batch_wins_and_the_failed_one_is_stale_later(start_service):
    service = await start(start_service, fails=lambda user_id, change: change.status == "past_due")
    older = sub_update("user-a", 1_700_000_200, status="past_due")
    newer = sub_update("user-a", 1_700_000_300, status="trialing")
    await post(service, older, newer)
    assert await run_batch(service) == 2
    assert [await status(service, e) for e in (older, newer)] == ["failed", "processed"]
    assert (await service.user("user-a"))["subscription_status"] == "trialing"
    await make_due(service, older)
    await run_batch(service)
    assert await status(service, older) == "stale"  # the newer one was applied: the older changes nothing
    assert (await service.user("user-a"))["subscription_status"] == "trialing"


async def test_a_failed_newer_event_records_no_version_so_its_retry_applies(start_service):
    broken = {"on": True}
    service = await start(start_service, fails=lambda user_id, change: broken["on"] and change.status == "trialing")
    older = sub_update("user-a", 1_700_000_200, status="past_due")
    newer = sub_update("user-a", 1_700_000_300, status="trialing")
    await post(service, older, newer)
    assert await run_batch(service) == 2
    assert [await status(service, e) for e in (older, newer)] == ["processed", "failed"]
    version = await service.db.fetchone("SELECT event_created, event_id FROM stripe_object_versions "
                                        "WHERE object_id = %s", ("sub_user-a",))
    assert (version["event_created"], version["event_id"]) == (1_700_000_200, older["id"])
    broken["on"] = False
    await make_due(service, newer)
    await run_batch(service)
    assert await status(service, newer) == "processed"
    assert (await service.user("user-a"))["subscription_status"] == "trialing"
    assert [len(await analytics(service, e)) for e in (older, newer)] == [1, 1]


async def test_each_event_of_a_batch_sees_the_profile_as_the_earlier_ones_left_it(start_service):
    service = await start(start_service)
    canceled = sub_update("user-a", 1_700_000_200, status="canceled")
    back = sub_update("user-a", 1_700_000_300, status="active")
    await post(service, back, canceled)  # arrival order does not matter: the batch runs by `created`
    assert await run_batch(service) == 2
    (first,), (second,) = await analytics(service, canceled), await analytics(service, back)
    assert (first["old_status"], first["status"]) == ("active", "canceled")
    assert (second["old_tier"], second["old_status"], second["action"]) == ("free", "canceled", "subscribed")
    user = await service.user("user-a")
    assert (user["tier"], user["subscription_status"]) == ("pro", "active")


@pytest.mark.parametrize("kind, created", [("created", 1_700_000_050), ("updated", 1_700_000_099)])
async def test_an_event_older_than_the_recorded_version_is_stale_within_a_batch(start_service, kind, created):
    service = await start(start_service)
    late = fixture(f"customer.subscription.{kind}", created=created, id="sub_user-a", customer="cus_user-a",
                   status="incomplete", metadata={})
    fresh = sub_update("user-b", 1_700_000_200, status="past_due")
    await post(service, late, fresh)
    assert await run_batch(service) == 2
    assert [await status(service, e) for e in (late, fresh)] == ["stale", "processed"]
    assert (await service.user("user-a"))["subscription_status"] == "active"
    assert await analytics(service, late) == []


async def test_a_new_subscription_and_its_update_in_one_batch_apply_in_order(start_service):
    service = await start(start_service)
    created = fixture("customer.subscription.created", created=1_700_000_400, id="sub_new", customer="cus_user-c",
                      status="incomplete")
    updated = fixture("customer.subscription.updated", created=1_700_000_400, id="sub_new", customer="cus_user-c",
                      status="active", metadata={})
    await post(service, updated, created)
    assert await run_batch(service) == 2
    assert [await status(service, e) for e in (created, updated)] == ["processed", "processed"]
    row = await service.db.fetchone("SELECT status FROM subscriptions WHERE id = %s", ("sub_new",))
    assert row["status"] == "active"
    version = await service.db.fetchval("SELECT event_id FROM stripe_object_versions WHERE object_id = %s",
                                        ("sub_new",))
    assert version == updated["id"]


async def test_a_batch_reads_the_stored_bodies_of_events_this_process_no_longer_holds(start_service):
    """Bodies parsed at the door are kept until claimed (a bounded number); a batch whose events
    were stored by another instance, or before a restart, reads theirs from the inbox."""
    service = await start(start_service)
    held, dropped = sub_update("user-a", 1_700_000_200, status="past_due"), sub_update("user-b", 1_700_000_200,
                                                                                       status="past_due")
    await post(service, held, dropped)
    service.app[DISPATCHER]._bodies.pop(dropped["id"])  # as if another instance had stored it
    assert await run_batch(service) == 2
    assert service.app[DISPATCHER].failed_batches == 0  # as one batch, not one by one after a failure
    assert [await status(service, e) for e in (held, dropped)] == ["processed", "processed"]
    assert [len(await analytics(service, e)) for e in (held, dropped)] == [1, 1]
    assert {u: (await service.user(u))["subscription_status"] for u in USERS} == {
        "user-a": "past_due", "user-b": "past_due", "user-c": "active"}
