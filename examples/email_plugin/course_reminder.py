"""A third-party email template plugin: a reminder about a live course session.

Load it with `VIBE_PLUGINS_DIRS=examples/email_plugin` and preview it with

    VIBE_PLUGINS_DIRS=examples/email_plugin python run.py email preview course_reminder

Queue one with POST /functions/v1/email-notifications {"type": "course_reminder", ...}. Its files
live in `templates/` beside this module and extend the service's shared layout.
"""

from pathlib import Path

from vibe.api import EmailTemplate, Field, hookimpl


@hookimpl
def register_email_templates(settings):
    return [
        EmailTemplate(
            name="course_reminder", category="engagement",
            data={"session_title": Field("str", required=True, max_length=200),
                  "starts_at": Field("number", required=True, description="Unix seconds"),
                  "join_url": Field("str", pattern="https://.+", strip=False)},
            description="A live session the learner booked starts soon.",
            sample={"session_title": "Live build: a SaaS in an afternoon", "starts_at": 1764777600,
                    "join_url": "https://meet.example.com/vibe-live"},
            directory=Path(__file__).parent / "templates",
        ),
    ]
