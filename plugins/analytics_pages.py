"""Analytics endpoint `page-view`: a path or URL is required; page views are counted per path per day."""

from collections import Counter
from urllib.parse import urlsplit

from vibe.api import (
    AnalyticsEndpoint,
    EventInvalid,
    Field,
    Shape,
    choice_field,
    day,
    hookimpl,
    number_field,
    text_field,
    upsert_sum,
)

MAX_PATH = 1024
PROPERTIES = {"path": Field("str", nullable=True, min_length=1, max_length=MAX_PATH, pattern=r"/[\s\S]*", strip=False,
                       message="must start with '/'", description="this or url is required"),
              "url": text_field(max_len=2048, description="an absolute http(s) URL"),
              "title": text_field(max_len=2048), "referrer": text_field(max_len=2048), "name": text_field(max_len=2048),
              # from the browser's User-Agent unless given (vibe.analytics.contract), and its viewport
              "device_type": choice_field(("mobile", "tablet", "desktop")), "browser": text_field(max_len=32),
              "viewport_width": number_field(minimum=0, maximum=100000, integer=True),
              "viewport_height": number_field(minimum=0, maximum=100000, integer=True)}
PROPERTIES = Shape(PROPERTIES, closed=False, null_is_absent=True, any_of=("path", "url"))


def page_properties(props):
    """After PROPERTIES: a path or a URL, and the path as it is counted."""
    path, url = props.get("path"), props.get("url")
    if url is not None:
        try:
            parts = urlsplit(url)
        except ValueError:  # a malformed host: "https://4]", "https://[::1"
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise EventInvalid("properties.url", "properties.url must be an absolute http(s) URL")
        path = path or parts.path or "/"
    if path is None:
        raise EventInvalid("properties.path", "a page view needs properties.path or properties.url")
    if not path.startswith("/"):
        raise EventInvalid("properties.path", "properties.path must start with '/'")
    return {**props, "path": path.split("?", 1)[0].split("#", 1)[0] or "/"}


async def count_page_views(tx, events):
    views = Counter((day(e.ts), e.properties["path"]) for e in events)
    await upsert_sum(tx, "analytics_page_views", ("day", "path"), ("n",), {k: (n,) for k, n in views.items()})


@hookimpl
def register_analytics_endpoints():
    return AnalyticsEndpoint("page-view", page_properties, event="page_view", properties=PROPERTIES,
                             rollup=count_page_views,
                             aggregate="pages",
                             description="A page was shown: properties.path or properties.url.")
