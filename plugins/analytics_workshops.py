"""Analytics endpoint `workshop-completion`: a workshop id (score and duration optional), counted
per workshop per day with score and duration sums for averages."""

from vibe.api import (
    AnalyticsEndpoint,
    day,
    hookimpl,
    number_field,
    text_field,
    upsert_sum,
)

PROPERTIES = {"workshop_id": text_field(required=True, max_len=128),
              "score": number_field(minimum=0, maximum=100),
              "duration": number_field(minimum=0, maximum=365 * 86400, description="seconds"),
              "challenges_completed": number_field(minimum=0, integer=True)}


async def count_completions(tx, events):
    sums: dict = {}
    for e in events:
        key = (day(e.ts), e.properties["workshop_id"])
        score, duration = e.properties.get("score"), e.properties.get("duration")
        n, scored, score_sum, timed, duration_sum = sums.get(key, (0, 0, 0.0, 0, 0.0))
        sums[key] = (n + 1, scored + (score is not None), score_sum + (score or 0),
                     timed + (duration is not None), duration_sum + (duration or 0))
    await upsert_sum(tx, "analytics_workshop_completions", ("day", "workshop_id"),
                     ("n", "scored", "score_sum", "timed", "duration_sum"), sums)


@hookimpl
def register_analytics_endpoints():
    return AnalyticsEndpoint("workshop-completion", properties=PROPERTIES, event="workshop_completed",
                             rollup=count_completions,
                             aggregate="workshops",
                             description="A learner completed a workshop: properties.workshop_id, score, duration.")
