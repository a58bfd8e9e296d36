"""Analytics endpoint `workshop-completion`: a workshop id (score and duration optional), counted
per workshop per day with score and duration sums for averages."""

from vibe.api import AnalyticsEndpoint, day, hookimpl, number, text, upsert_sum


def completion_properties(props):
    text(props, "workshop_id", required=True, max_len=128)
    number(props, "score", minimum=0, maximum=100)
    number(props, "duration", minimum=0, maximum=365 * 86400)
    return props


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
    return AnalyticsEndpoint("workshop-completion", completion_properties, event="workshop_completed",
                             rollup=count_completions,
                             aggregate="workshops",
                             description="A learner completed a workshop: properties.workshop_id, score, duration.")
