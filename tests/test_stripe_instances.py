"""Several instances on one database share the inbox: every event is processed exactly once."""

import asyncio
import collections
import uuid

from conftest import make_event

from vibe.plugins.hookspecs import hookimpl


class Counter:
    """Counts committed processing: each call writes a row in the event's transaction (a call
    that is rolled back, say with its event's savepoint, leaves nothing)."""

    @hookimpl
    async def stripe_event_processed(self, ctx, event):
        await ctx.tx.execute(
            "INSERT INTO review_flags (reason, reference, created_at) VALUES (%s, %s, %s)",
            ("processed", f"{event['id']}:{uuid.uuid4().hex}", ctx.now),
        )


async def test_two_instances_process_each_event_once(start_service):
    a = await start_service(extra_plugins=(Counter(),))
    b = await start_service(extra_plugins=(Counter(),))
    events = []
    for i in range(60):
        customer = f"cus_multi{i}"
        events.append(make_event("customer.created", {"id": customer, "object": "customer",
                                                      "metadata": {"user_id": f"multi-{i}"}}, created=1_700_000_000))
        events.append(make_event("customer.subscription.created", {
            "id": f"sub_multi{i}", "object": "subscription", "customer": customer, "status": "active",
            "items": {"data": [{"price": {"id": "price_000000000000000000000000"}}]}}, created=1_700_000_001))
    # Each delivery goes to either instance, as behind a load balancer; some twice, to both.
    posts = [(a if i % 2 else b).post_event(e) for i, e in enumerate(events)]
    posts += [(b if i % 2 else a).post_event(e) for i, e in enumerate(events[::7])]
    answers = await asyncio.gather(*posts)
    assert {r.status for r in answers} == {200}
    await a.settle()
    await b.settle()
    rows = await a.db.fetchall("SELECT reference FROM review_flags WHERE reason = 'processed'")
    total = collections.Counter(r["reference"].split(":")[0] for r in rows)
    assert set(total) == {e["id"] for e in events} and set(total.values()) == {1}
    for i in range(60):
        assert (await a.user(f"multi-{i}"))["tier"] == "pro"
