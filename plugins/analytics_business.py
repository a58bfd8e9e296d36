"""Analytics endpoint `business-metric`: a named numeric figure a server reports (write key or
service token only), summed per name per day."""

from vibe.api import (
    AnalyticsEndpoint,
    check_name,
    day,
    hookimpl,
    number,
    text,
    upsert_sum,
)


def metric_properties(props):
    check_name(props.get("name"), "properties.name")
    number(props, "value", required=True)
    text(props, "unit", max_len=32)
    return props


async def sum_metrics(tx, events):
    sums: dict = {}
    for e in events:
        key = (day(e.ts), e.properties["name"])
        n, total = sums.get(key, (0, 0.0))
        sums[key] = (n + 1, total + float(e.properties["value"]))
    await upsert_sum(tx, "analytics_business_metrics", ("day", "name"), ("n", "total"), sums)


@hookimpl
def register_analytics_endpoints():
    return AnalyticsEndpoint("business-metric", metric_properties, event="business_metric",
                             senders=frozenset({"server"}), rollup=sum_metrics, aggregate="business-metrics",
                             description="A business figure: properties.name and a numeric properties.value.")
