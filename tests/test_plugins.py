"""Plugins: a third-party folder works without touching vibe/, and mistakes fail at start-up."""

import inspect

import pytest
from conftest import ROOT, make_event, run_cli
from stripe_support import fixture, link_user

from vibe.billing.keys import DISPATCHER, STRIPE_HANDLERS
from vibe.config import Settings
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import PluginError, build_plugin_manager
from vibe.web.app import create_app

EXAMPLES = str(ROOT / "examples" / "plugins")


async def test_the_example_plugin_handles_one_more_event_type(start_service):
    service = await start_service(VIBE_PLUGINS_DIRS=EXAMPLES)
    await link_user(service)
    await service.deliver(fixture("invoice.payment_succeeded", created=1_700_000_100))
    failed = make_event("charge.refund.updated", {"id": "re_000000000000000000000000", "object": "refund",
                                                  "amount": 500, "currency": "usd", "status": "failed",
                                                  "charge": "ch_000000000000000000000000",
                                                  "payment_intent": "pi_000000000000000000000000"})
    await service.deliver(failed, failed)
    row = await service.event_row(failed["id"])
    assert row["status"] == "processed" and "of 500 usd failed: user user-1 flagged" in row["note"]
    user = await service.user("user-1")
    assert [(p["status"], p["amount"]) for p in user["payments"]] == [("succeeded", 2000)]
    assert user["needs_review"] is True


async def test_without_the_plugin_the_same_event_is_only_stored(service):
    failed = make_event("charge.refund.updated", {"id": "re_1", "object": "refund", "status": "failed"})
    await service.deliver(failed)
    assert (await service.event_row(failed["id"]))["status"] == "ignored"


class Duplicate:
    @hookimpl
    def register_stripe_handlers(self):
        async def again(ctx):
            return None

        return {"customer.created": again}


class Typo:
    @hookimpl
    def register_stripe_handlers(self):
        async def handler(ctx):
            return None

        return {"invoice.paid_succeeded": handler}


@pytest.mark.parametrize("plugin, message", [(Duplicate(), "handled twice"), (Typo(), "unknown Stripe event type")])
def test_registration_mistakes_are_start_up_errors(env, plugin, message):
    settings = Settings.from_env(env)
    with pytest.raises(PluginError, match=message):
        create_app(settings, pm=build_plugin_manager(settings, extra=(plugin,)))


def test_extra_event_types_admit_types_newer_than_the_library(env):
    settings = Settings.from_env({**env, "STRIPE_EXTRA_EVENT_TYPES": "invoice.paid_succeeded"})
    app = create_app(settings, pm=build_plugin_manager(settings, extra=(Typo(),)))
    assert "invoice.paid_succeeded" in app[STRIPE_HANDLERS]


async def test_serve_refuses_to_start_with_a_broken_plugin_folder(env, tmp_path):
    (tmp_path / "broken.py").write_text("raise ImportError('no such thing')\n")
    code, out, err = await run_cli("serve", "--port", "1", env={**env, "VIBE_PLUGINS_DIRS": str(tmp_path)})
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"plugin error: plugin {tmp_path / 'broken.py'}: ImportError: no such thing"]


class Recorder:
    """An async domain-hook implementation, run inside the event's transaction."""

    def __init__(self, fail: bool = False):
        self.changes = []
        self.fail = fail

    @hookimpl
    async def subscription_changed(self, ctx, user_id, change):
        self.changes.append((user_id, change.old_tier, change.tier, change.status))
        await ctx.tx.execute("UPDATE profiles SET display_name = %s WHERE id = %s", ("seen", user_id))
        if self.fail:
            raise RuntimeError("the analytics store is full")


async def test_domain_hooks_run_once_inside_the_event_transaction(start_service):
    recorder = Recorder()
    service = await start_service(extra_plugins=(recorder,))
    await link_user(service)
    created = fixture("customer.subscription.created", created=1_700_000_100)
    await service.deliver(created, created)
    await service.app[DISPATCHER].process_ids([created["id"]])  # what `events replay` runs
    assert recorder.changes == [("user-1", "free", "pro", "active")]
    assert (await service.user("user-1"))["display_name"] == "seen"


async def test_a_failing_domain_hook_rolls_the_whole_event_back(start_service):
    service = await start_service(extra_plugins=(Recorder(fail=True),), STRIPE_MAX_ATTEMPTS="1")
    await link_user(service)
    created = fixture("customer.subscription.created", created=1_700_000_100)
    await service.deliver(created)
    row = await service.wait_status(created["id"], "dead")
    assert "the analytics store is full" in row["last_error"]
    user = await service.user("user-1")
    assert (user["tier"], user["display_name"], user["subscriptions"]) == ("free", None, [])


def test_every_hook_is_documented():
    from vibe.plugins import hookspecs

    docs = (ROOT / "docs" / "plugins.md").read_text()
    names = [n for n in dir(hookspecs) if not n.startswith("_") and hasattr(getattr(hookspecs, n), "vibe_spec")]
    assert names
    missing = [n for n in names if f"### `{n}`" not in docs]
    assert not missing, f"document these hooks in docs/plugins.md: {missing}"


async def test_what_a_wrapper_sees_of_an_async_hook_and_the_order_implementations_run_in():
    """docs/plugins.md, "Async hooks and wrappers": pluggy calls every implementation before
    vibe awaits any, so a wrapper sees coroutines not yet run, a plain function's body runs
    before any async body, and the async ones run in the order the wrapper hands back."""
    from vibe.plugins import hookspecs
    from vibe.plugins.context import call_hook
    from vibe.plugins.host import PluginManager

    ran: list[str] = []
    seen: list[object] = []

    class Async:
        def __init__(self, name):
            self.name = name

        @hookimpl
        async def user_changed(self, user_id):
            ran.append(self.name)
            return self.name

    class Plain:
        @hookimpl(trylast=True)
        def user_changed(self, user_id):
            ran.append("plain")
            return "plain"

    class Wrapper:
        @hookimpl(wrapper=True)
        def user_changed(self, user_id):
            results = yield
            seen.extend(results)
            assert ran == ["plain"]  # no async body has run yet
            return list(reversed(results))  # the host awaits them in this order

    pm = PluginManager("vibe")
    pm.add_hookspecs(hookspecs)
    for plugin in (Async("first"), Async("second"), Plain(), Wrapper()):
        pm.register(plugin)
    results = await call_hook(pm, "user_changed", ctx=None, user_id="u", fields={})
    assert inspect.iscoroutine(seen[0]) and inspect.iscoroutine(seen[1]) and seen[2] == "plain"
    assert ran == ["plain", "first", "second"]  # pluggy's order was second, first, plain
    assert results == ["plain", "first", "second"]
