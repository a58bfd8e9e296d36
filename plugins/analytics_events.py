"""Analytics endpoints `event` (any named event) and `user-behavior` (what a learner did in the UI)."""

from vibe.api import AnalyticsEndpoint, Shape, hookimpl, number_field, text_field

# A named event: the body's `event` names it; properties are free-form JSON.
EVENT = Shape({}, closed=False, description="free-form")
# Category / action / label / value, the way web analytics describe an interaction.
BEHAVIOR = {"action": text_field(required=True, max_len=100), "category": text_field(), "label": text_field(),
            "element": text_field(), "value": number_field(), "url": text_field(max_len=2048)}


@hookimpl
def register_analytics_endpoints():
    return [
        AnalyticsEndpoint("event", properties=EVENT, description="Any named event (the body's 'event')."),
        AnalyticsEndpoint("user-behavior", properties=BEHAVIOR, event="user_behavior",
                          description="An interaction: properties.action (required), category, label, value."),
    ]

