"""POST /functions/v1/user-management: every action through HTTP, with real tokens and SQL."""

import dataclasses
import time
import uuid

import pytest
import tokens

from vibe.api import Achievement, CompletedItem, SubscriptionChange, UserRecord
from vibe.plugins.hookspecs import hookimpl

PATH = "/functions/v1/user-management"


async def call(service, action, data=None, token=None, **kw):
    body = {"action": action} if data is None else {"action": action, "data": data}
    headers = tokens.auth(token) if token else {}
    resp = await service.client.post(PATH, json=body, headers=headers, **kw)
    return resp.status, await resp.json()


class Recorder:
    """A plugin that records the domain hooks it hears."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def user_created(self, user):
        assert isinstance(user, UserRecord)
        self.calls.append(("user_created", user.id))

    @hookimpl
    def subscription_changed(self, user_id, change):
        documented = {"subscription_id", "old_tier", "tier", "old_status", "status", "current_period_end",
                      "cancel_at_period_end", "amount", "currency", "source", "event_id"}
        assert isinstance(change, SubscriptionChange)
        assert documented <= {f.name for f in dataclasses.fields(change)} and change.source == "admin"
        self.calls.append(("subscription_changed", user_id, change.tier, change.reason))

    @hookimpl
    def workshop_completed(self, user_id, workshop_id, item):
        assert isinstance(item, CompletedItem)
        assert item.status == "completed" and item.resource_id == workshop_id
        self.calls.append(("workshop_completed", user_id, workshop_id))

    @hookimpl
    def achievement_unlocked(self, user_id, achievement):
        assert isinstance(achievement, Achievement) and achievement.key and achievement.name
        self.calls.append(("achievement_unlocked", user_id, achievement.key))

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
async def recorder_service(start_service):
    recorder = Recorder()
    service = await start_service(extra_plugins=(recorder,))
    service.recorder = recorder
    return service


async def onboard(service, user_id=None, **data):
    user_id = user_id or str(uuid.uuid4())
    status, body = await call(service, "create_profile", data, tokens.user_token(user_id))
    assert status == 200, body
    return user_id, body


async def test_create_profile_is_idempotent_and_announced_once(recorder_service):
    service = recorder_service
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id, email="Ada@Example.com")
    data = {"display_name": "Ada", "locale": "en-GB", "marketing_consent": True,
            "avatar_url": "https://cdn.example.com/a.png"}
    status, body = await call(service, "create_profile", data, token)
    assert status == 200 and body["created"] is True
    profile = body["profile"]
    assert profile["id"] == user_id and profile["email"] == "ada@example.com"
    assert profile["full_name"] == "Test Learner" and profile["display_name"] == "Ada"
    assert profile["marketing_consent"] is True and profile["tier"] == "free"
    assert profile["referral_code"].startswith("VIBE")
    status, again = await call(service, "create_profile", data, token)
    assert status == 200 and again["created"] is False and again["profile"]["referral_code"] == profile["referral_code"]
    assert service.recorder.named("user_created") == [("user_created", user_id)]


async def test_referral_code_sets_referrer_and_self_referral_is_refused(service):
    referrer, body = await onboard(service)
    code = body["profile"]["referral_code"]
    user_id, joined = await onboard(service, referral_code=code.lower())
    assert joined["profile"]["referred_by"] == referrer
    me = str(uuid.uuid4())
    status, err = await call(service, "create_profile", {"referral_code": "VIBENOPE"}, tokens.user_token(me))
    assert status == 400 and err["error"]["details"]["errors"][0]["field"] == "data.referral_code"
    status, body = await call(service, "get_profile", {}, tokens.user_token(referrer))
    assert body["referrals"]["referred_users"] == 1


async def test_unknown_action_lists_valid_ones_and_bad_bodies_are_named(service):
    token = tokens.user_token()
    status, body = await call(service, "delete_everything", {}, token)
    assert status == 400 and body["error"]["code"] == "unknown_action"
    assert "check_access" in body["error"]["details"]["valid_actions"] and body["error"]["request_id"]
    resp = await service.client.post(PATH, data=b"{nope", headers={**tokens.auth(token), "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    resp = await service.client.post(PATH, data=b"x", headers={**tokens.auth(token), "Content-Type": "text/plain"})
    assert resp.status == 415
    status, body = await call(service, "create_profile", {"display_name": 5, "locale": "not a locale!",
                                                          "avatar_url": "http://insecure", "shoe_size": 42}, token)
    fields = {e["field"] for e in body["error"]["details"]["errors"]}
    assert status == 400 and fields == {"data.display_name", "data.locale", "data.avatar_url", "data.shoe_size"}
    for field in fields:
        assert field in body["error"]["message"]


async def test_roles_are_decided_before_data(service):
    status, body = await call(service, "get_profile", {})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await call(service, "update_subscription", {"garbage": True}, tokens.user_token())
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await call(service, "bulk_update", "not even an object", tokens.user_token())
    assert status == 403
    status, body = await call(service, "sync_progress", {"items": []}, tokens.service_token())
    assert status == 403
    resp = await service.client.post(PATH, json={"action": "get_profile"}, headers={"Authorization": "Bearer x.y.z"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_token"


async def test_get_profile_of_another_user_is_403_but_admin_and_service_may(service):
    owner, _ = await onboard(service)
    status, body = await call(service, "get_profile", {"user_id": owner}, tokens.user_token())
    assert status == 403
    for token in (tokens.admin_token(), tokens.service_token()):
        status, body = await call(service, "get_profile", {"user_id": owner}, token)
        assert status == 200 and body["profile"]["id"] == owner
    status, body = await call(service, "get_profile", {"user_id": "nobody"}, tokens.admin_token())
    assert status == 404 and body["error"]["code"] == "profile_not_found"
    status, body = await call(service, "get_profile", {}, tokens.service_token())
    assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.user_id"


async def test_update_profile_changes_only_what_a_user_may(service):
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    status, body = await call(service, "update_profile", {"display_name": "New", "marketing_consent": True}, token)
    assert status == 200 and body["updated"] == ["display_name", "marketing_consent"]
    status, body = await call(service, "get_profile", {}, token)
    assert body["profile"]["display_name"] == "New" and body["profile"]["marketing_consent"] is True
    status, body = await call(service, "update_profile", {"tier": "expert", "role": "admin", "locale": "fr"}, token)
    errors = {e["field"]: e["message"] for e in body["error"]["details"]["errors"]}
    assert status == 400 and set(errors) == {"data.tier", "data.role"} and "may not be changed" in errors["data.tier"]
    status, body = await call(service, "get_profile", {}, token)
    assert body["profile"]["tier"] == "free" and body["profile"]["locale"] is None  # nothing half-applied
    status, body = await call(service, "update_profile", {}, token)
    assert status == 400
    status, body = await call(service, "update_profile", {"locale": "de"}, tokens.user_token())
    assert status == 404


async def test_update_subscription_is_audited_announced_and_opens_content(recorder_service):
    service = recorder_service
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    status, body = await call(service, "check_access", {"resource_type": "workshop", "resource_id": "6"}, token)
    assert status == 200 and body == {"resource_type": "workshop", "resource_id": "6", "allowed": False,
                                      "reason": "upgrade_required", "required_tier": "pro", "user_tier": "free"}
    status, body = await call(service, "update_subscription", {"user_id": user_id, "tier": "pro"}, tokens.admin_token())
    assert status == 400 and body["error"]["details"]["errors"] == [{"field": "data.reason", "message": "is required"}]
    status, body = await call(service, "update_subscription",
                              {"user_id": user_id, "tier": "pro", "reason": "conference speaker"}, tokens.admin_token())
    assert status == 200 and body["changed"] == ["tier"]
    # the session cache forgot the user at once: the next check sees the new tier
    status, body = await call(service, "check_access", {"resource_type": "workshop", "resource_id": "6"}, token)
    assert body["allowed"] is True and body["user_tier"] == "pro" and body["reason"] == "tier_includes_item"
    audit = await service.db.fetchall("SELECT * FROM subscription_audit WHERE user_id = %s", (user_id,))
    assert len(audit) == 1 and audit[0]["reason"] == "conference speaker" and audit[0]["actor"].startswith("admin:")
    assert audit[0]["old_tier"] == "free" and audit[0]["new_tier"] == "pro"
    assert service.recorder.named("subscription_changed") == [("subscription_changed", user_id, "pro", "conference speaker")]
    status, body = await call(service, "update_subscription", {"user_id": "ghost", "tier": "pro", "reason": "x"},
                              tokens.service_token())
    assert status == 404


async def test_check_access_rules_grace_and_validation(service):
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    for kind in ("commandment", "workshop", "template"):
        status, body = await call(service, "check_access", {"resource_type": kind, "resource_id": "1"}, token)
        assert body["allowed"] is True and body["reason"] == "free_item"
        status, body = await call(service, "check_access", {"resource_type": kind, "resource_id": "10"}, token)
        assert body["allowed"] is False
    now = int(time.time())
    await call(service, "update_subscription", {"user_id": user_id, "tier": "expert", "status": "past_due",
                                                "current_period_end": now - 86400, "reason": "t"}, tokens.service_token())
    status, body = await call(service, "check_access", {"resource_type": "template", "resource_id": "10"}, token)
    assert body["allowed"] is True and body["reason"] == "grace_period"
    await call(service, "update_subscription", {"user_id": user_id, "tier": "expert", "status": "past_due",
                                                "current_period_end": now - 8 * 86400, "reason": "t"}, tokens.service_token())
    status, body = await call(service, "check_access", {"resource_type": "template", "resource_id": "10"}, token)
    assert body["allowed"] is False and body["reason"] == "grace_period_over" and body["user_tier"] == "free"
    await call(service, "update_subscription", {"user_id": user_id, "tier": "expert", "status": "canceled",
                                                "reason": "t"}, tokens.service_token())
    status, body = await call(service, "check_access", {"resource_type": "workshop", "resource_id": "3"}, token)
    assert body["allowed"] is False and body["reason"] == "subscription_canceled"
    status, body = await call(service, "check_access", {"resource_type": "workshop", "resource_id": "99"}, token)
    assert status == 404 and body["error"]["code"] == "resource_not_found"
    status, body = await call(service, "check_access", {"resource_type": "video", "resource_id": 3}, token)
    assert status == 400 and {e["field"] for e in body["error"]["details"]["errors"]} == {
        "data.resource_type", "data.resource_id"}
    status, body = await call(service, "check_access", {"resource_type": "workshop", "resource_id": "10"},
                              tokens.admin_token())
    assert body["allowed"] is True and body["reason"] == "admin"


async def test_tier_admin_is_an_administrator(service):
    user_id, _ = await onboard(service)
    await call(service, "update_subscription", {"user_id": user_id, "tier": "admin", "reason": "staff"},
               tokens.service_token())
    other, _ = await onboard(service)
    status, body = await call(service, "get_profile", {"user_id": other}, tokens.user_token(user_id))
    assert status == 200 and body["profile"]["id"] == other


async def test_sync_progress_is_idempotent_never_backwards_and_announces_once(recorder_service):
    service = recorder_service
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    items = [{"resource_type": "workshop", "resource_id": "1", "status": "completed", "progress": 100},
             {"resource_type": "commandment", "resource_id": "2", "status": "in_progress", "progress": 40}]
    status, body = await call(service, "sync_progress", {"items": items}, token)
    assert status == 200 and body["changed"] == 2 and body["completed_workshops"] == ["1"]
    assert {a["key"] for a in body["achievements"]} == {"first_workshop"}
    status, body = await call(service, "sync_progress", {"items": items}, token)
    assert body["changed"] == 0 and body["unchanged"] == 2 and body["achievements"] == []
    backwards = [{"resource_type": "workshop", "resource_id": "1", "status": "in_progress", "progress": 10},
                 {"resource_type": "commandment", "resource_id": "2", "status": "not_started", "progress": 0}]
    status, body = await call(service, "sync_progress", {"items": backwards}, token)
    assert body["changed"] == 0
    status, body = await call(service, "get_profile", {}, token)
    got = {(p["resource_type"], p["resource_id"]): p for p in body["progress"]}
    assert got[("workshop", "1")]["status"] == "completed" and got[("workshop", "1")]["progress"] == 100
    assert got[("commandment", "2")]["status"] == "in_progress" and got[("commandment", "2")]["progress"] == 40
    assert body["summary"]["completed"] == 1 and body["summary"]["by_type"]["workshop"]["completed"] == 1
    assert [a["key"] for a in body["achievements"]] == ["first_workshop"]
    every = [{"resource_type": "commandment", "resource_id": str(i), "status": "completed"} for i in range(1, 11)]
    status, body = await call(service, "sync_progress", {"items": every + every}, token)
    assert status == 200 and {a["key"] for a in body["achievements"]} == {"first_commandment", "all_commandments",
                                                                           "ten_items"}
    assert service.recorder.named("workshop_completed") == [("workshop_completed", user_id, "1")]
    unlocked = [c[2] for c in service.recorder.named("achievement_unlocked")]
    assert sorted(unlocked) == ["all_commandments", "first_commandment", "first_workshop", "ten_items"]


async def test_sync_progress_validation_names_every_item_field(service):
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    bad = [{"resource_type": "workshop", "resource_id": "1", "status": "done"},
           {"resource_type": "workshop", "resource_id": "42", "status": "completed"},
           {"resource_type": "workshop", "resource_id": "2", "status": "in_progress", "progress": 101,
            "completed_at": time.time() + 86400},
           "nope"]
    status, body = await call(service, "sync_progress", {"items": bad}, token)
    fields = {e["field"] for e in body["error"]["details"]["errors"]}
    assert status == 400 and fields == {"data.items[0].status", "data.items[1].resource_id", "data.items[2].progress",
                                        "data.items[2].completed_at", "data.items[3]"}
    many = [{"resource_type": "workshop", "resource_id": "1", "status": "completed"}] * 501
    status, body = await call(service, "sync_progress", {"items": many}, token)
    assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.items"
    status, body = await call(service, "sync_progress", {"items": bad[:1]}, tokens.user_token())
    assert status == 400  # validation comes before the profile look-up
    status, body = await call(service, "sync_progress", {"items": bad[1:2] and [
        {"resource_type": "workshop", "resource_id": "1", "status": "completed"}]}, tokens.user_token())
    assert status == 404 and body["error"]["code"] == "profile_not_found"


async def test_bulk_update_reports_each_item_and_applies_valid_ones(recorder_service):
    service = recorder_service
    a, _ = await onboard(service)
    b, _ = await onboard(service)
    items = [{"user_id": a, "tier": "starter", "reason": "promo", "display_name": "A"},
             {"user_id": b, "tier": "galactic", "reason": "x"},
             {"user_id": "ghost", "needs_review": True},
             {"user_id": b, "locale": "pt-BR"},
             {"user_id": b, "locale": "pt-BR"},
             {"user_id": a, "status": "active"}]
    status, body = await call(service, "bulk_update", {"items": items}, tokens.service_token())
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == ["updated", "invalid", "not_found", "updated", "unchanged", "invalid"]
    assert results[0]["changed"] == ["display_name", "tier"]
    assert results[1]["errors"][0]["field"] == "data.items[1].tier"
    assert body["counts"] == {"updated": 2, "unchanged": 1, "invalid": 2, "not_found": 1, "error": 0}
    status, body = await call(service, "get_profile", {}, tokens.user_token(a))
    assert body["profile"]["tier"] == "starter" and body["profile"]["display_name"] == "A"
    status, body = await call(service, "get_profile", {}, tokens.user_token(b))
    assert body["profile"]["tier"] == "free" and body["profile"]["locale"] == "pt-BR"
    status, body = await call(service, "bulk_update", {"items": [{"user_id": a}] * 1001}, tokens.admin_token())
    assert status == 400


async def test_concurrent_syncs_announce_a_completion_exactly_once(recorder_service):
    import asyncio

    service = recorder_service
    user_id, _ = await onboard(service)
    token = tokens.user_token(user_id)
    items = [{"resource_type": "workshop", "resource_id": "2", "status": "completed"}]
    answers = await asyncio.gather(*(call(service, "sync_progress", {"items": items}, token) for _ in range(6)))
    assert all(status == 200 for status, _ in answers)
    assert sum(body["changed"] for _, body in answers) == 1
    assert service.recorder.named("workshop_completed") == [("workshop_completed", user_id, "2")]
    assert [c[2] for c in service.recorder.named("achievement_unlocked")] == ["first_workshop"]


async def test_bulk_update_takes_a_thousand_items(service):
    a, _ = await onboard(service)
    items = [{"user_id": a, "display_name": f"name {i}"} for i in range(1000)]
    status, body = await call(service, "bulk_update", {"items": items}, tokens.service_token())
    assert status == 200 and body["counts"]["updated"] == 1000
    status, body = await call(service, "get_profile", {}, tokens.user_token(a))
    assert body["profile"]["display_name"] == "name 999"
