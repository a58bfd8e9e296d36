"""The learner's journey, end to end, through HTTP only (both databases).

Sign up with a referral code, check out (the Stripe events of a real subscription checkout,
signed, some delivered twice and out of order), get pro, open pro content, sync progress to a
completed workshop, receive exactly the mails this deserves, pay the referrer exactly one
commission, count each analytics step once; then cancel, and access closes.
"""

import email
import email.policy
import random
import time
import uuid
from pathlib import Path

import pytest
import tokens
from conftest import wait_until
from stripe_support import CUSTOMER, fixture

pytestmark = pytest.mark.reliability

USERS = "/functions/v1/user-management"
ANALYTICS = "/functions/v1/analytics-tracking"
SUBSCRIPTION = "sub_000000000000000000000000"


async def act(service, token, action, data=None):
    resp = await service.client.post(USERS, json={"action": action, "data": data or {}}, headers=tokens.auth(token))
    return resp.status, await resp.json()


def checkout_events(user_id: str, email: str, start: int) -> list[dict]:
    """What Stripe sends for one subscription checkout, in the order it creates them."""
    return [
        fixture("customer.created", start, email=email, metadata={"user_id": user_id}),
        fixture("checkout.session.completed", start + 1, mode="subscription", client_reference_id=user_id,
                     subscription=SUBSCRIPTION, payment_status="paid", customer_details={"email": email}),
        fixture("customer.subscription.created", start + 2, current_period_end=start + 30 * 86400),
        fixture("invoice.payment_succeeded", start + 3, subscription=SUBSCRIPTION),
        fixture("payment_intent.succeeded", start + 4, customer=CUSTOMER),
    ]


async def track(service, token, endpoint, message_id, **fields):
    body = {"message_id": message_id, **fields}
    resp = await service.client.post(f"{ANALYTICS}/{endpoint}", json=body,
                                     headers={**tokens.auth(token), "User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/133.0"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_learner_journey_end_to_end(start_service, tmp_path):
    service = await start_service(EMAIL_POLL_SECONDS="0.05", VIBE_EMAIL_SCHEDULER="false")
    referrer_id, learner_id = str(uuid.uuid4()), str(uuid.uuid4())
    referrer, learner = tokens.user_token(referrer_id), tokens.user_token(learner_id, email="ada@example.com")

    # Sign up: the referrer first, then the learner with the referrer's code.
    status, body = await act(service, referrer, "create_profile", {"display_name": "Grace"})
    assert status == 200, body
    code = body["profile"]["referral_code"]
    status, body = await act(service, learner, "create_profile", {"display_name": "Ada", "referral_code": code})
    assert status == 200 and body["created"] is True, body
    assert body["profile"]["referred_by"] == referrer_id and body["profile"]["tier"] == "free"
    status, body = await act(service, learner, "create_profile", {"display_name": "Ada", "referral_code": code})
    assert status == 200 and body["created"] is False  # a retried sign-up changes nothing

    # Before paying: pro content is closed.
    status, body = await act(service, learner, "check_access", {"resource_type": "workshop", "resource_id": "6"})
    assert status == 200 and body["allowed"] is False and body["reason"] == "upgrade_required"

    # Checkout: the real sequence, shuffled, with three events delivered twice.
    start = int(time.time()) - 60
    events = checkout_events(learner_id, "ada@example.com", start)
    deliveries = events + [events[1], events[3], events[4]]
    random.Random(7).shuffle(deliveries)
    for event in deliveries:
        resp = await service.post_event(event)
        assert resp.status == 200, await resp.text()
    await service.settle()
    states = {(await service.event_row(e["id"]))["status"] for e in events}
    assert states <= {"processed", "ignored"}, states

    # Pro tier; pro content opens.
    status, body = await act(service, learner, "get_profile")
    assert status == 200 and body["profile"]["tier"] == "pro"
    assert body["profile"]["subscription_status"] == "active"
    status, body = await act(service, learner, "check_access", {"resource_type": "workshop", "resource_id": "6"})
    assert body["allowed"] is True and body["reason"] == "tier_includes_item", body

    # The learner works through pro workshop 6 and completes it (the app retries the last sync).
    await track(service, learner, "page-view", "pv-ws6", properties={"path": "/workshops/6"})
    items = [{"resource_type": "workshop", "resource_id": "6", "status": "in_progress", "progress": 40}]
    status, body = await act(service, learner, "sync_progress", {"items": items})
    assert status == 200 and body["completed_workshops"] == []
    done = [{"resource_type": "workshop", "resource_id": "6", "status": "completed", "progress": 100}]
    status, body = await act(service, learner, "sync_progress", {"items": done})
    assert status == 200 and body["completed_workshops"] == ["6"], body
    status, body = await act(service, learner, "sync_progress", {"items": done})
    assert status == 200 and body["completed_workshops"] == [] and body["changed"] == 0
    for _ in range(2):  # the browser retries the completion event: counted once
        await track(service, learner, "workshop-completion", "wc-ws6", properties={"workshop_id": "6", "score": 92})

    # The referrer earns exactly one commission: 20% of the one payment of $20.
    status, body = await act(service, referrer, "get_profile")
    assert status == 200
    assert body["referrals"]["referred_users"] == 1
    assert body["referrals"]["earnings"] == [{"currency": "usd", "amount": 400, "commissions": 1}]

    # Analytics: each step once.
    admin = tokens.admin_token()
    resp = await service.client.get(f"{ANALYTICS}/journey/{learner_id}", headers=tokens.auth(admin))
    assert resp.status == 200
    journey = [e for s in (await resp.json())["sessions"] for e in s["events"]]
    names = sorted(e.get("event") or e.get("name") for e in journey)
    assert names.count("page_view") == 1 and names.count("workshop_completed") == 1, names
    rows = await service.db.fetchall(
        "SELECT event, properties FROM analytics_events WHERE user_id = %s ORDER BY ts", (learner_id,))
    billing = [r for r in rows if r["event"] == "subscription_event"]
    actions = sorted(_props(r)["action"] for r in billing)
    assert actions == ["payment", "subscribed"], actions
    payments = await service.db.fetchall("SELECT amount, currency FROM payments WHERE user_id = %s", (learner_id,))
    assert [(p["amount"], p["currency"]) for p in payments] == [(2000, "usd")]

    # Cancelled: the subscription ends, the tier drops, pro content closes.
    cancelled = fixture("customer.subscription.deleted", start + 600)
    for _ in range(2):
        assert (await service.post_event(cancelled)).status == 200
    await service.settle()
    status, body = await act(service, learner, "check_access", {"resource_type": "workshop", "resource_id": "6"})
    assert body["allowed"] is False and body["user_tier"] == "free", body
    status, body = await act(service, learner, "check_access", {"resource_type": "workshop", "resource_id": "1"})
    assert body["allowed"] is True  # free content stays open
    rows = await service.db.fetchall(
        "SELECT properties FROM analytics_events WHERE user_id = %s AND event = 'subscription_event'", (learner_id,))
    assert sorted(_props(r)["action"] for r in rows) == ["canceled", "payment", "subscribed"]
    commissions = await service.db.fetchval("SELECT COUNT(*) FROM commissions WHERE referrer_id = %s", (referrer_id,))
    assert commissions == 1

    # Exactly the mails deserved, each sent once: read the outbox (.eml files) when the queue is empty.
    async def queue_empty() -> bool:
        return not await service.db.fetchval(
            "SELECT COUNT(*) FROM email_messages WHERE status IN ('queued', 'sending', 'failed')")

    await wait_until(queue_empty, 20)
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted((Path(service.settings.data_dir) / "outbox").glob("*.eml"))]
    to_learner = [m for m in mails if "ada@example.com" in m["To"]]
    rows = await service.db.fetchall("SELECT user_id, type, status FROM email_messages ORDER BY id")
    assert {r["status"] for r in rows} == {"sent"} and len(mails) == len(rows)
    kinds = sorted(r["type"] for r in rows if r["user_id"] == learner_id)
    assert kinds == ["achievement", "payment_confirmation", "welcome", "workshop_completion"], kinds
    assert sorted(r["type"] for r in rows if r["user_id"] == referrer_id) == ["referral_commission", "welcome"]
    assert len(to_learner) == 4
    assert any("$20.00" in m.get_body(("plain",)).get_content() for m in to_learner)  # the receipt


def _props(row) -> dict:
    import json

    value = row["properties"]
    return json.loads(value) if isinstance(value, str) else value
