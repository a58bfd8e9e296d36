"""Learning mail: workshop completions, achievements, and the weekly progress report."""

import datetime

from vibe.api import EmailTemplate, Field, enqueue_for, hookimpl, recent_progress


@hookimpl
def register_email_templates():
    return [
        EmailTemplate(
            name="workshop_completion", category="engagement",
            data={"workshop_id": Field("str|int", required=True), "workshop_title": Field("str"),
                  "next_workshop_title": Field("str")},
            description="A learner completed a workshop.", aliases=("workshop_completed",),
            preference="achievement_emails",
            sample={"workshop_id": "prompting-101", "workshop_title": "Prompting 101",
                    "next_workshop_title": "Agents in practice"},
        ),
        EmailTemplate(
            name="achievement", category="engagement",
            data={"achievement": Field("object", required=True, description="key, name, description?")},
            description="A learner unlocked an achievement (`achievement`: key, name, description?).",
            aliases=("achievement_unlocked",), preference="achievement_emails",
            sample={"achievement": {"key": "first_workshop", "name": "First steps",
                                    "description": "You completed your first workshop."}},
        ),
        EmailTemplate(
            name="weekly_progress", category="engagement",
            data={"week": Field("str"), "workshops_completed": Field("int"), "items_completed": Field("int"),
                  "achievements_unlocked": Field("int"), "highlights": Field("list")},
            description="Once per ISO week to each active learner; computed when no data is given.",
            sample={"week": "2026-W48", "workshops_completed": 2, "achievements_unlocked": 1,
                    "highlights": ["Prompting 101", "First steps"]},
            prepare=weekly_report, preference="progress_emails",
        ),
    ]


async def weekly_report(tx, profile, data, now):
    """The last seven days from user management's tables: items completed, achievements unlocked."""
    if data:
        return data
    since = now - 7 * 86400
    done, unlocked = await recent_progress(tx, profile["id"], since)
    workshops = [r["resource_id"] for r in done if r["resource_type"] == "workshop"]
    year, week, _ = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isocalendar()
    return {"week": f"{year}-W{week:02d}", "workshops_completed": len(workshops),
            "items_completed": len(done), "achievements_unlocked": len(unlocked),
            "highlights": (workshops + unlocked)[:10]}


@hookimpl
async def workshop_completed(ctx, user_id, workshop_id, item):
    data = {"workshop_id": workshop_id}
    title = getattr(item, "title", None)  # a CompletedItem; its title when the announcer knew it
    if title:
        data["workshop_title"] = str(title)
    await enqueue_for(ctx, user_id, "workshop_completion", data, f"workshop_completion:{user_id}:{workshop_id}")


@hookimpl
async def achievement_unlocked(ctx, user_id, achievement):
    fields = {"key": achievement.key, "name": achievement.name, "description": achievement.description}
    data = {"achievement": {k: v for k, v in fields.items() if v}}
    await enqueue_for(ctx, user_id, "achievement", data, f"achievement:{user_id}:{achievement.key}")
