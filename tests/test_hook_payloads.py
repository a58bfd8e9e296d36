"""The domain hooks carry typed, frozen payloads (vibe/billing/domain.py, vibe/users/domain.py),
and an old plugin that reads them as dicts keeps working for one release, with a warning."""

import dataclasses
import re

import pytest
from conftest import ROOT
from stripe_support import CUSTOMER, fixture, link_user

from vibe import api
from vibe.api import (
    Achievement,
    Commission,
    CompletedItem,
    Dispute,
    Payment,
    SubscriptionChange,
    UserRecord,
)
from vibe.plugins import hookspecs
from vibe.plugins.hookspecs import hookimpl

PAYLOADS = (UserRecord, SubscriptionChange, Payment, Dispute, Commission, CompletedItem, Achievement)


class Recorder:
    """Records what each billing domain hook is given."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def named(self, name):
        return [kwargs for hook, kwargs in self.calls if hook == name]

    @hookimpl
    def stripe_event_processed(self, ctx, event, outcome):
        self.calls.append(("stripe_event_processed", {"event": event, "outcome": outcome}))

    @hookimpl
    def customer_linked(self, user_id, customer_id):
        self.calls.append(("customer_linked", {"user_id": user_id, "customer_id": customer_id}))

    @hookimpl
    def user_created(self, user):
        self.calls.append(("user_created", {"user": user}))

    @hookimpl
    def user_changed(self, user_id, fields):
        self.calls.append(("user_changed", {"user_id": user_id, "fields": fields}))

    @hookimpl
    def subscription_changed(self, user_id, change):
        self.calls.append(("subscription_changed", {"user_id": user_id, "change": change}))

    @hookimpl
    def payment_succeeded(self, payment):
        self.calls.append(("payment_succeeded", {"payment": payment}))

    @hookimpl
    def payment_failed(self, payment):
        self.calls.append(("payment_failed", {"payment": payment}))

    @hookimpl
    def dispute_created(self, dispute):
        self.calls.append(("dispute_created", {"dispute": dispute}))

    @hookimpl
    def commission_earned(self, commission):
        self.calls.append(("commission_earned", {"commission": commission}))


async def test_signed_webhooks_announce_dataclasses_with_the_right_values(start_service):
    recorder = Recorder()
    service = await start_service(extra_plugins=(recorder,))
    await service.db.execute(
        "INSERT INTO profiles (id, email, referral_code, created_at, updated_at) VALUES (%s, %s, %s, 0, 0)",
        ("referrer", "ref@example.com", "VIBEREF"))
    await link_user(service)  # customer.created: a new profile, linked to the customer
    await service.db.execute("UPDATE profiles SET referred_by = %s WHERE id = %s", ("referrer", "user-1"))

    [created] = recorder.named("user_created")
    user = created["user"]
    assert isinstance(user, UserRecord) and user.id == "user-1" and user.email == "learner@example.com"
    assert (user.tier, user.needs_review, user.cancel_at_period_end) == ("free", False, False)
    assert user.referral_code.startswith("VIBE")
    assert recorder.named("customer_linked") == [{"user_id": "user-1", "customer_id": CUSTOMER}]
    assert {"user_id": "user-1", "fields": ["stripe_customer_id"]} in recorder.named("user_changed")
    processed = recorder.named("stripe_event_processed")
    assert [p["event"]["type"] for p in processed] == ["customer.created"]
    assert processed[0]["outcome"] == "processed" and isinstance(processed[0]["event"], dict)

    subscribed = fixture("customer.subscription.created", created=1_700_000_100)
    await service.deliver(subscribed)
    [change] = [c["change"] for c in recorder.named("subscription_changed")]
    assert change == SubscriptionChange(
        subscription_id="sub_000000000000000000000000", old_tier="free", tier="pro", old_status=None,
        status="active", current_period_end=change.current_period_end, cancel_at_period_end=False,
        amount=1500, currency="usd", source="stripe", event_id=subscribed["id"])
    assert isinstance(change.current_period_end, int) and (change.reason, change.actor) == (None, None)

    invoice = fixture("invoice.payment_succeeded", created=1_700_000_200)
    await service.deliver(invoice, invoice)  # a replay announces nothing more
    [paid] = [c["payment"] for c in recorder.named("payment_succeeded")]
    assert isinstance(paid, Payment)
    assert (paid.user_id, paid.customer_id, paid.status, paid.kind, paid.amount, paid.currency) == (
        "user-1", CUSTOMER, "succeeded", "invoice", 2000, "usd")
    assert (paid.invoice_id, paid.payment_intent_id, paid.charge_id, paid.dedupe_key) == (
        "in_000000000000000000000000", "pi_000000000000000000000000", "ch_000000000000000000000000",
        "pi:pi_000000000000000000000000")
    assert (paid.source_event_id, paid.created, paid.failure_message) == (invoice["id"], 1_700_000_200, None)
    assert isinstance(paid.id, int)

    [commission] = [c["commission"] for c in recorder.named("commission_earned")]
    assert isinstance(commission, Commission)
    assert (commission.referrer_id, commission.referred_user_id, commission.payment_id) == ("referrer", "user-1", paid.id)
    assert (commission.amount, commission.currency) == (400, "usd") and commission.amount == int(2000 * commission.rate)

    await service.deliver(fixture("charge.dispute.created", created=1_700_000_300))
    [dispute] = [c["dispute"] for c in recorder.named("dispute_created")]
    assert dispute == Dispute(id="dp_000000000000000000000000", user_id="user-1", amount=100, currency="usd",
                              reason="fraudulent", charge_id="ch_000000000000000000000000",
                              payment_intent_id=None, status="warning_needs_response")

    failed = fixture("invoice.payment_failed", created=1_700_000_400, subscription="sub_000000000000000000000000")
    await service.deliver(failed)
    [failure] = [c["payment"] for c in recorder.named("payment_failed")]
    assert isinstance(failure, Payment)
    assert (failure.status, failure.amount, failure.user_id, failure.subscription_id, failure.dedupe_key) == (
        "failed", 2000, "user-1", "sub_000000000000000000000000", "failed:in:in_000000000000000000000000:1")
    past_due = recorder.named("subscription_changed")[-1]["change"]
    assert isinstance(past_due, SubscriptionChange)
    assert (past_due.old_status, past_due.status, past_due.tier, past_due.amount, past_due.event_id) == (
        "active", "past_due", "pro", None, failed["id"])


class OldStylePlugin:
    """A plugin written for 0.2, when payloads were dicts."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def subscription_changed(self, user_id, change):
        self.seen.append((change["old_tier"], change["tier"], change.get("reason", "none"), "amount" in change))

    @hookimpl
    def payment_succeeded(self, payment):
        self.seen.append((payment["amount"], payment.get("currency", ""), dict(payment)["id"] == payment.id))


async def test_an_old_plugin_reading_payloads_as_dicts_still_works_and_is_warned(start_service):
    plugin = OldStylePlugin()
    service = await start_service(extra_plugins=(plugin,))
    await link_user(service)
    subscribed = fixture("customer.subscription.created", created=1_700_000_100)
    invoice = fixture("invoice.payment_succeeded", created=1_700_000_200)
    with pytest.warns(DeprecationWarning, match=r"(SubscriptionChange|Payment).* hook payload read as a dict"):
        await service.deliver(subscribed, invoice)
    # the two events are independent: the dispatcher may apply them in either order
    assert sorted(plugin.seen, key=repr) == sorted([("free", "pro", None, True), (2000, "usd", True)], key=repr)
    assert [(await service.event_row(e["id"]))["status"] for e in (subscribed, invoice)] == ["processed"] * 2


def test_dict_access_answers_like_the_dict_did_and_names_the_attribute():
    change = SubscriptionChange(subscription_id="sub_1", old_tier="free", tier="pro", old_status=None,
                                status="active", current_period_end=None, cancel_at_period_end=False)
    with pytest.warns(DeprecationWarning, match=r"SubscriptionChange\['tier'\] .*deprecated.*SubscriptionChange\.tier") as caught:
        assert change["tier"] == "pro"
    assert caught[0].filename == __file__  # the warning points at the plugin's line
    with pytest.warns(DeprecationWarning, match=r"SubscriptionChange\.get\('reason'\)"):
        assert change.get("reason") is None
    with pytest.warns(DeprecationWarning):
        assert change.get("no_such_field", "default") == "default"
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        change["no_such_field"]
    with pytest.warns(DeprecationWarning):
        assert "tier" in change and "no_such_field" not in change
    with pytest.warns(DeprecationWarning):
        assert dict(change) == change.as_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.tier = "expert"


def test_as_dict_and_from_row():
    item = CompletedItem.from_row({"resource_type": "workshop", "resource_id": "1", "status": "completed",
                                   "progress": 100.0, "completed_at": 5.0, "not_a_field": "ignored"})
    assert item.as_dict() == {"resource_type": "workshop", "resource_id": "1", "status": "completed",
                              "progress": 100.0, "completed_at": 5.0, "title": None}
    achievement = Achievement(key="first_workshop", name="First steps", description=None, unlocked_at=5.0)
    assert achievement.as_dict()["key"] == "first_workshop"
    user = UserRecord.from_row({"id": "u", "needs_review": 1, "marketing_consent": 0, "cancel_at_period_end": 0})
    assert (user.needs_review, user.marketing_consent, user.cancel_at_period_end) == (True, False, False)


def test_every_payload_type_is_exported_named_by_its_hook_and_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    specs = {name: getattr(hookspecs, name).__doc__ for name in dir(hookspecs)
             if hasattr(getattr(hookspecs, name), "vibe_spec")}
    for cls in PAYLOADS:
        assert cls.__name__ in api.__all__ and dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, cls
        assert any(f"vibe.api.{cls.__name__}" in (doc or "") for doc in specs.values()), cls
        section = re.search(rf"^#### `{cls.__name__}`\n(.*?)(?=^#)", docs, re.DOTALL | re.MULTILINE)
        assert section, f"docs/plugins.md: add a `#### `{cls.__name__}`` table"
        missing = [f.name for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in section.group(1)]
        assert not missing, f"docs/plugins.md: document {cls.__name__}'s fields {missing}"


async def test_a_dict_announced_by_an_old_plugin_becomes_the_type_with_a_warning():
    from pluggy import PluginManager

    from vibe.plugins.context import DomainContext

    recorder = Recorder()
    pm = PluginManager("vibe")
    pm.add_hookspecs(hookspecs)
    pm.register(recorder)
    ctx = DomainContext(tx=None, settings=None, pm=pm)
    old = {"id": "dp_1", "user_id": None, "amount": 100, "currency": "usd", "reason": "fraudulent",
           "charge_id": "ch_1"}
    with pytest.warns(DeprecationWarning, match=r"announcing dispute_created with a dict .*vibe\.api\.Dispute") as caught:
        await ctx.announce("dispute_created", dispute=old)
    assert caught[0].filename == __file__
    assert recorder.named("dispute_created") == [{"dispute": Dispute(**old)}]
    await ctx.announce("user_changed", user_id="u", fields=["tier"])  # untyped arguments pass as they are
    assert recorder.named("user_changed") == [{"user_id": "u", "fields": ["tier"]}]
