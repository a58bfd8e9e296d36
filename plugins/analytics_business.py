"""Analytics endpoint `business-metric`: a named numeric figure a server reports (write key or
service token only), summed per name per day."""

from vibe.api import (
    AnalyticsEndpoint,
    Field,
    day,
    hookimpl,
    name_field,
    number_field,
    text_field,
    upsert_sum,
)

PROPERTIES = {"name": name_field(required=True, description="the figure's name"),
              "value": number_field(required=True), "unit": text_field(max_len=32),
              "dimensions": Field("object", nullable=True, description="what the figure is broken down by")}


async def sum_metrics(tx, events):
    sums: dict = {}
    for e in events:
        key = (day(e.ts), e.properties["name"])
        n, total = sums.get(key, (0, 0.0))
        sums[key] = (n + 1, total + float(e.properties["value"]))
    await upsert_sum(tx, "analytics_business_metrics", ("day", "name"), ("n", "total"), sums)


@hookimpl
def register_analytics_endpoints():
    return AnalyticsEndpoint("business-metric", properties=PROPERTIES, event="business_metric",
                             senders=frozenset({"server"}), rollup=sum_metrics, aggregate="business-metrics",
                             description="A business figure: properties.name, a numeric properties.value, dimensions.")
