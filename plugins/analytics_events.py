"""Analytics endpoints `event` (any named event) and `user-behavior` (what a learner did in the UI)."""

from vibe.api import AnalyticsEndpoint, Field, Shape, hookimpl, number_field, text_field

# A named event: the body's `event` names it; properties are free-form JSON.
EVENT = Shape({}, closed=False, description="free-form")
# Category / action / label / value, the way web analytics describe an interaction; and what
# the original function's behaviour events held (resource_type, resource_id, duration_ms, metadata).
BEHAVIOR = {"action": text_field(required=True, max_len=100), "category": text_field(), "label": text_field(),
            "element": text_field(), "value": number_field(), "url": text_field(max_len=2048),
            "resource_type": text_field(max_len=100), "resource_id": text_field(max_len=2048),
            "duration_ms": number_field(minimum=0), "metadata": Field("object", nullable=True)}


@hookimpl
def register_analytics_endpoints():
    return [
        AnalyticsEndpoint("event", properties=EVENT, description="Any named event (the body's 'event')."),
        AnalyticsEndpoint("user-behavior", properties=BEHAVIOR, event="user_behavior",
                          description="An interaction: properties.action (required), category, label, value, "
                                      "resource_type, resource_id, duration_ms, metadata."),
    ]

