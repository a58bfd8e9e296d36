"""The original Edge Function's bodies (CONTRACT.md, "analytics-tracking"), mapped onto vibe's
event envelope before an event is checked, so the platform's callers send what they always sent.

`adapt(endpoint, raw, sender)` returns the event as vibe reads it; vibe's own bodies pass unchanged.

* `event_type` names the event where the body names it (`event`). On `subscription-event` it is
  the original's kind: the event is `subscription_<event_type>`, `properties.event_type` keeps
  the kind and `properties.action` is vibe's action for it (`purchased`: `payment`, which is
  revenue; `cancelled`: `canceled`; a kind that is no action of the endpoint: `updated`).
* `page_url`, `referrer` and `user_agent` go where Segment keeps them: `context.page.url`,
  `context.page.referrer`, `context.user_agent`. On `page-view` the page is the view's own:
  `properties.url` (`properties.path` for a path starting with `/`) and `properties.referrer`.
* Renamed: `metric_type` to `properties.name` (business-metric), `subscription_tier` to
  `properties.tier` (subscription-event), `completion_time_ms` to `properties.duration` in
  seconds (workshop-completion).
* Any other top-level name outside the envelope (`action`, `resource_type`, `workshop_id`,
  `score`, `value`, `dimensions`, `metadata`, `viewport_width`, a caller's own) is kept in
  `properties` under its name, where the endpoint's declared properties check it.
* Refused with 400 naming the field: a name vibe records itself (RESERVED), and a value that
  would land on a key the body gives already with another value (`plan` and `properties.plan`).
* An anonymous caller without `anonymous_id` is known by its `session_id` (the original had no
  anonymous ids); a business metric that names nobody is the business's (`anonymous_id: business`).
* A page view gets `properties.device_type` (mobile, tablet, desktop) and `properties.browser`
  from the browser's User-Agent, unless the body gives them.
"""

from __future__ import annotations

import re
from typing import Any

from vibe.analytics.model import ENVELOPE, AnalyticsEndpoint, EventInvalid, Sender
from vibe.web.validation import Field, problems_of

# What vibe records about an event itself: never taken from a body.
RESERVED = frozenset({"id", "endpoint", "received_at", "is_bot", "source", "sender_scope", "ts"})
TEXT = {"page_url": 2048, "referrer": 2048, "user_agent": 1024}
IN_CONTEXT = {"page_url": ("page", "url"), "referrer": ("page", "referrer"), "user_agent": ("user_agent",)}
RENAMED = {"business-metric": {"metric_type": "name"}, "subscription-event": {"subscription_tier": "tier"},
           "page-view": {"referrer": "referrer"}}
ACTIONS = {"purchased": "payment", "cancelled": "canceled"}
ORIGINAL_FIELDS = {  # per endpoint, the original's top-level names (documented in /openapi.json)
    "event": ("event_type", "page_url", "referrer", "user_agent"),
    "user-behavior": ("action", "resource_type", "resource_id", "duration_ms", "metadata"),
    "business-metric": ("metric_type", "value", "dimensions"),
    "page-view": ("page_url", "referrer", "viewport_width", "viewport_height"),
    "workshop-completion": ("workshop_id", "completion_time_ms", "score", "challenges_completed"),
    "subscription-event": ("event_type", "subscription_tier", "amount", "currency"),
}
MILLISECONDS = Field("number", minimum=0, whole_floats=True)
KIND = Field("str", min_length=1, max_length=80, pattern=r"[A-Za-z0-9_.-]+", strip=False,
             message="must be 1 to 80 letters, digits, '_', '.' or '-'")

_TABLET = re.compile(r"iPad|Tablet|PlayBook|Silk/|Kindle|Android(?!.*Mobile)", re.IGNORECASE)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android|BlackBerry|IEMobile|Opera Mini|Windows Phone", re.IGNORECASE)
_BROWSERS = (("edge", re.compile(r"Edg(e|A|iOS)?/")), ("firefox", re.compile(r"Firefox/|FxiOS/")),
             ("chrome", re.compile(r"Chrome/|CriOS/")), ("safari", re.compile(r"Safari/")))


def device_type(agent: str) -> str:
    """mobile, tablet or desktop, from a User-Agent (an iPad is a tablet, an Android phone mobile)."""
    return "tablet" if _TABLET.search(agent) else "mobile" if _MOBILE.search(agent) else "desktop"


def browser(agent: str) -> str:
    """edge, firefox, chrome, safari or other (Edge and Chrome say Safari too: the order matters)."""
    return next((name for name, pattern in _BROWSERS if pattern.search(agent)), "other")


def _checked(value: Any, spec: Field, name: str) -> Any:
    found = problems_of(value, spec, name)
    if found:
        raise EventInvalid(name, f"{name} {found[0].message}")
    return value


def _put(target: dict, key: str, value: Any, origin: str, where: str) -> None:
    """target[key] = value, unless the body gives that key already with another value."""
    if target.get(key) is not None and target[key] != value:
        raise EventInvalid(origin, f"{origin} is given twice, at the top level and as {where}{key}")
    target[key] = value


def _object(raw: dict, field: str) -> dict:
    value = raw.get(field)
    if value is not None and not isinstance(value, dict):
        raise EventInvalid(field, f"{field} must be a JSON object")
    return dict(value or {})


def adapt(endpoint: AnalyticsEndpoint, raw: Any, sender: Sender) -> Any:
    """`raw` (one event of a functions-door request) in vibe's envelope; EventInvalid when refused."""
    if not isinstance(raw, dict):
        return raw  # parse_event says why
    extra = {k: v for k, v in raw.items() if k not in ENVELOPE and v is not None}
    for key in sorted(extra):
        if key in RESERVED:
            raise EventInvalid(key, f"{key} is a name vibe records itself and may not be sent")
    out = {k: v for k, v in raw.items() if k in ENVELOPE}
    props, context = _object(raw, "properties"), _object(raw, "context")
    renamed = RENAMED.get(endpoint.name, {})
    for key in sorted(extra):
        value = extra[key]
        if key in TEXT:
            _checked(value, Field("str", max_length=TEXT[key], strip=False), key)
        if key == "event_type" and endpoint.name == "subscription-event":
            _checked(value, KIND, key)
            _put(out, "event", f"subscription_{value}", key, "")
            _put(props, "event_type", value, key, "properties.")
            action = ACTIONS.get(value, value)
            spec = endpoint.properties.fields.get("action") if endpoint.properties else None
            props.setdefault("action", action if not isinstance(getattr(spec, "choices", None), tuple)
                                         or action in spec.choices else "updated")
        elif key == "event_type" and endpoint.event is None:
            _put(out, "event", value, key, "")
        elif key == "page_url" and endpoint.name == "page-view":
            _put(props, "path" if value.startswith("/") else "url", value, key, "properties.")
        elif key == "completion_time_ms" and endpoint.name == "workshop-completion":
            _put(props, "duration", _checked(value, MILLISECONDS, key) / 1000, key, "properties.")
        elif key in renamed:
            _put(props, renamed[key], value, key, "properties.")
        elif key in IN_CONTEXT:
            *parents, leaf = IN_CONTEXT[key]
            place, where = context, "context."
            for parent in parents:
                place[parent] = _object({where + parent: place.get(parent)}, where + parent)
                place, where = place[parent], f"{where}{parent}."
            _put(place, leaf, value, key, where)
        else:
            _put(props, key, value, key, "properties.")
    if sender.kind == "anonymous" and out.get("anonymous_id") is None:
        out["anonymous_id"] = out.get("session_id")
    if endpoint.name == "business-metric" and out.get("user_id") is None and out.get("anonymous_id") is None:
        out["anonymous_id"] = "business"
    if endpoint.name == "page-view":
        agent = sender.user_agent if sender.kind != "server" else context.get("user_agent", context.get("userAgent"))
        if isinstance(agent, str):
            props.setdefault("device_type", device_type(agent))
            props.setdefault("browser", browser(agent))
    if props or "properties" in raw:
        out["properties"] = props
    if context or "context" in raw:
        out["context"] = context
    return out


# Per endpoint, the original's names that stand in for the required `properties` (or `event`).
INSTEAD = {"event": ("event_type",), "user-behavior": ("action",), "business-metric": ("metric_type", "value"),
           "workshop-completion": ("workshop_id",), "subscription-event": ("event_type",)}


def top_level(endpoint: AnalyticsEndpoint) -> tuple[dict[str, dict], tuple[str, ...]]:
    """The original's top-level names `endpoint` takes, as JSON Schema, and those that may stand
    in for what vibe's shape requires (for /openapi.json)."""
    from vibe.analytics.schemas import NAME
    from vibe.web.validation import field_schema

    fields = endpoint.properties.fields if endpoint.properties is not None else {}
    renamed = RENAMED.get(endpoint.name, {})
    names = ORIGINAL_FIELDS.get(endpoint.name, ORIGINAL_FIELDS["event"] if endpoint.event is None else ())
    out = {}
    for name in names:
        if name in TEXT:
            spec = Field("str", max_length=TEXT[name], strip=False)
        elif name == "event_type":
            spec = KIND if endpoint.name == "subscription-event" else NAME
        elif name == "completion_time_ms":
            spec = MILLISECONDS
        else:
            spec = fields.get(renamed.get(name, name))
        if spec is not None:
            out[name] = {**field_schema(spec, nullable=True), "description": "the original function's name"}
    return out, tuple(n for n in INSTEAD.get(endpoint.name, ()) if n in out)
