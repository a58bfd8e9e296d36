"""CONTRACT.md and issue 13 for user management: the platform's `notification_preferences` set
with `update_profile` and shown by `get_profile`; times in answers as ISO 8601 (as Supabase rows
are), and time inputs as ISO 8601 or Unix seconds. Through HTTP, on both databases."""

import uuid

import pytest
import tokens

from vibe.users.sessions import NOTIFICATION_KEYS
from vibe.web.times import iso, to_seconds

PATH = "/functions/v1/user-management"
ALL_ON = dict.fromkeys(NOTIFICATION_KEYS, True)


async def call(service, action, data, token):
    resp = await service.client.post(PATH, json={"action": action, "data": data}, headers=tokens.auth(token))
    return resp.status, await resp.json()


@pytest.fixture
async def learner(service):
    user_id = str(uuid.uuid4())
    token = tokens.user_token(user_id)
    status, body = await call(service, "create_profile", {"display_name": "Ada"}, token)
    assert status == 200, body
    return user_id, token


async def test_notification_preferences_are_set_merged_and_shown(service, learner):
    user_id, token = learner
    status, body = await call(service, "get_profile", {}, token)
    assert status == 200 and body["profile"]["notification_preferences"] == ALL_ON
    status, body = await call(service, "update_profile", {"notification_preferences": {"payment_emails": False}}, token)
    assert status == 200 and body["updated"] == ["notification_preferences"], body
    assert body["profile"]["notification_preferences"] == {**ALL_ON, "payment_emails": False}
    status, body = await call(service, "update_profile", {"notification_preferences": {"progress_emails": False}}, token)
    expected = {**ALL_ON, "payment_emails": False, "progress_emails": False}  # merged with what was stored
    assert status == 200 and body["profile"]["notification_preferences"] == expected
    status, body = await call(service, "get_profile", {}, token)
    assert body["profile"]["notification_preferences"] == expected
    status, body = await call(service, "get_profile", {"user_id": user_id}, tokens.service_token())
    assert status == 200 and body["profile"]["notification_preferences"] == expected
    status, body = await call(service, "update_profile", {"notification_preferences": {"progress_emails": False}}, token)
    assert status == 200 and body["updated"] == []  # nothing changed
    status, body = await call(service, "update_profile", {"notification_preferences": {"payment_emails": True}}, token)
    assert body["profile"]["notification_preferences"] == {**ALL_ON, "progress_emails": False}


@pytest.mark.parametrize("switches, field", [
    ({"marketing_emails": False}, "data.notification_preferences.marketing_emails"),
    ({"payment_emails": "no"}, "data.notification_preferences.payment_emails"),
    ({"payment_emails": None}, "data.notification_preferences.payment_emails"),
    (["payment_emails"], "data.notification_preferences"),
], ids=["unknown-key", "not-a-boolean", "null", "not-an-object"])
async def test_bad_notification_preferences_are_400_and_change_nothing(service, learner, switches, field):
    _, token = learner
    status, body = await call(service, "update_profile", {"display_name": "Grace",
                                                          "notification_preferences": switches}, token)
    assert status == 400 and body["error"]["code"] == "invalid_data", body
    assert [e["field"] for e in body["error"]["details"]["errors"]] == [field]
    status, body = await call(service, "get_profile", {}, token)
    assert body["profile"]["display_name"] == "Ada" and body["profile"]["notification_preferences"] == ALL_ON


def is_iso(value) -> bool:
    return isinstance(value, str) and value.endswith("Z") and to_seconds(value) > 0


async def test_profile_times_are_iso_and_time_inputs_take_both_forms(service, learner):
    user_id, token = learner
    status, body = await call(service, "update_profile", {"full_name": "Ada Lovelace"}, token)
    assert is_iso(body["profile"]["created_at"]) and is_iso(body["profile"]["updated_at"])
    service_token = tokens.service_token()
    change = {"user_id": user_id, "tier": "pro", "status": "active", "reason": "contract test"}
    for given, shown in (("2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"), (1798848000, "2027-01-02T00:00:00Z"),
                         ("2027-01-03T01:00:00+01:00", "2027-01-03T00:00:00Z")):
        status, body = await call(service, "update_subscription", {**change, "current_period_end": given},
                                  service_token)
        assert status == 200, body
        status, body = await call(service, "get_profile", {}, token)
        assert body["profile"]["current_period_end"] == shown
    status, body = await call(service, "update_subscription", {**change, "current_period_end": "next week"},
                              service_token)
    assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.current_period_end"
    status, body = await call(service, "bulk_update", {"items": [
        {**change, "current_period_end": "2027-02-01T00:00:00Z"}]}, service_token)
    assert body["results"][0]["status"] == "updated", body
    status, body = await call(service, "get_profile", {"user_id": user_id}, service_token)
    assert body["profile"]["current_period_end"] == "2027-02-01T00:00:00Z"


async def test_progress_times_are_iso_and_completed_at_takes_iso(service, learner):
    user_id, token = learner
    status, body = await call(service, "sync_progress", {"items": [
        {"resource_type": "workshop", "resource_id": "1", "status": "completed",
         "completed_at": "2026-11-20T10:30:00Z"},
        {"resource_type": "workshop", "resource_id": "2", "status": "completed", "completed_at": 1763635200}]}, token)
    assert status == 200, body
    assert [a["key"] for a in body["achievements"]] == ["first_workshop"]
    assert all(is_iso(a["unlocked_at"]) for a in body["achievements"])
    status, body = await call(service, "get_profile", {}, token)
    done = {p["resource_id"]: p for p in body["progress"]}
    assert done["1"]["completed_at"] == "2026-11-20T10:30:00Z" and done["2"]["completed_at"] == iso(1763635200)
    assert all(is_iso(p["updated_at"]) for p in body["progress"])
    assert [a["key"] for a in body["achievements"]] == ["first_workshop"] and is_iso(body["achievements"][0]["unlocked_at"])
    status, body = await call(service, "sync_progress", {"items": [
        {"resource_type": "workshop", "resource_id": "3", "status": "completed", "completed_at": "3026-01-01"}]}, token)
    assert status == 400 and body["error"]["details"]["errors"][0]["field"] == "data.items[0].completed_at"
