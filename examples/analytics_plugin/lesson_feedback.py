"""A third-party analytics endpoint: `POST /functions/v1/analytics-tracking/lesson-feedback`.

Load it without touching vibe: `VIBE_PLUGINS_DIRS=examples/analytics_plugin python run.py serve`,
then send `{"properties": {"lesson_id": "intro-1", "rating": 5, "comment": "clear"}}` with a user's
token (or the write key and a user_id). The rating must be a whole number from 1 to 5.
"""

from vibe.api import AnalyticsEndpoint, hookimpl, number_field, text_field

# Checked before the event is stored, and shown in /openapi.json.
PROPERTIES = {
    "lesson_id": text_field(required=True, max_len=128),
    "rating": number_field(required=True, minimum=1, maximum=5, integer=True),
    "comment": text_field(max_len=2000),
}


@hookimpl
def register_analytics_endpoints(settings):
    return AnalyticsEndpoint(
        "lesson-feedback", properties=PROPERTIES, event="lesson_feedback",
        senders=frozenset({"user", "server"}),  # signed-in learners and servers; not anonymous browsers
        description="A learner rated a lesson: properties.lesson_id, rating (1-5), comment.",
    )
