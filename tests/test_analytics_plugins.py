"""Endpoints are plugins: the example adds a seventh, and start-up refuses duplicates."""

import pytest
import tokens
from analytics_support import WRITE_KEY, browser, post, stored
from conftest import ROOT

from vibe.analytics.keys import ANALYTICS
from vibe.analytics.model import AnalyticsEndpoint, collect_endpoints
from vibe.config import Settings
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import PluginError, build_plugin_manager
from vibe.web.app import create_app

EXAMPLE = str(ROOT / "examples" / "analytics_plugin")


async def test_the_example_plugin_adds_a_seventh_endpoint(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, VIBE_PLUGINS_DIRS=EXAMPLE)
    assert sorted(service.app[ANALYTICS].endpoints) == [
        "business-metric", "event", "lesson-feedback", "page-view", "subscription-event", "user-behavior",
        "workshop-completion"]
    learner = browser(tokens.user_token("learner"))
    await post(service, "lesson-feedback", {"properties": {"lesson_id": "intro", "rating": 4}}, learner)
    [row] = await stored(service, event="lesson_feedback")
    assert row["user_id"] == "learner"
    for props, field in (({"rating": 4}, "properties.lesson_id"), ({"lesson_id": "x", "rating": 6}, "properties.rating"),
                         ({"lesson_id": "x", "rating": 4.5}, "properties.rating")):
        answer = await post(service, "lesson-feedback", {"properties": props}, learner, status=400)
        assert answer["error"]["details"]["field"] == field
    answer = await post(service, "lesson-feedback", {"anonymous_id": "a", "properties": {"lesson_id": "x", "rating": 1}},
                        browser(), status=403)
    assert answer["error"]["code"] == "sender_not_allowed"


def test_without_the_example_there_are_six(env):
    settings = Settings.from_env(env)
    assert len(collect_endpoints(build_plugin_manager(settings), settings)) == 6


class Duplicate:
    @hookimpl
    def register_analytics_endpoints(self):
        return AnalyticsEndpoint("page-view", lambda props: props)


def test_a_duplicate_endpoint_is_a_start_up_error(env):
    settings = Settings.from_env(env)
    with pytest.raises(PluginError, match="page-view"):
        create_app(settings, pm=build_plugin_manager(settings, extra=(Duplicate(),)))


def test_endpoint_definitions_are_checked():
    with pytest.raises(ValueError):
        AnalyticsEndpoint("Bad Name", lambda p: p)
    with pytest.raises(ValueError):
        AnalyticsEndpoint("ok", lambda p: p, senders=frozenset({"robot"}))


def test_an_aggregate_needs_the_rollup_that_keeps_it():
    from vibe.api import AnalyticsEndpoint

    with pytest.raises(ValueError, match="needs the rollup"):
        AnalyticsEndpoint("lesson-rating", lambda properties: properties, aggregate="pages")
