"""Analytics endpoints `event` (any named event) and `user-behavior` (what a learner did in the UI)."""

from vibe.api import AnalyticsEndpoint, hookimpl, number, text


def event_properties(props):
    """A named event: the body's `event` names it; properties are free-form JSON."""
    return props


def behavior_properties(props):
    """Category / action / label / value, the way web analytics describe an interaction."""
    text(props, "action", required=True, max_len=100)
    for field in ("category", "label", "element"):
        text(props, field, max_len=200)
    number(props, "value")
    if "url" in props:
        text(props, "url", max_len=2048)
    return props


@hookimpl
def register_analytics_endpoints():
    return [
        AnalyticsEndpoint("event", event_properties, description="Any named event (the body's 'event')."),
        AnalyticsEndpoint("user-behavior", behavior_properties, event="user_behavior",
                          description="An interaction: properties.action (required), category, label, value."),
    ]

