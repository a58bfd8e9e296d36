"""The shapes analytics reads, in the one vocabulary of `vibe.web.validation`: the envelope every
event shares, the checks plugins use for their properties, and the JSON Schema of a track body
(for /openapi.json) built from the same declarations.

A plugin declares its endpoint's properties as a `Shape` (`AnalyticsEndpoint(properties=...)`);
the host checks them before the endpoint's own `validate` runs, and the document shows them.
`text`, `number` and `choice` check one property with the same fields, for a `validate` of its
own.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from vibe.web.validation import Field, Problems, Shape, _check_value, field_schema

MAX_BATCH = 100
ID_PATTERN = r"[\x21-\x7e]{1,128}"  # printable ASCII without spaces
ID = Field("str", nullable=True, max_length=128, pattern=ID_PATTERN, strip=False,
           description="1 to 128 printable ASCII characters without spaces")
NAME = Field("str", min_length=1, max_length=100, pattern=r"[^\x00-\x1f\x7f]*", strip=False,
             test=lambda v: v == v.strip() and v != "*",
             description="an event name: no control characters or surrounding spaces, not '*'")
TIME = Field("str|number", nullable=True, max_length=64, minimum=0, maximum=32503679999,
             description="ISO 8601 (UTC unless it names a zone) or Unix seconds, before the year 3000")
ENVELOPE = Shape({
    "event": NAME, "message_id": ID, "timestamp": TIME, "sent_at": TIME, "user_id": ID, "anonymous_id": ID,
    "session_id": ID,
    "properties": Field("object", nullable=True, description="what the endpoint records (see its properties)"),
    "context": Field("object", nullable=True, description="free-form: page, user_agent, campaign, ..."),
}, unknown="is not a field of an event; properties go in 'properties'",
    description="One event. Without a user's token it names a user_id (write key or service) or an "
                "anonymous_id; a signed-in user's events are theirs (a different user_id is refused).")


class EventInvalid(ValueError):
    """One event is not acceptable: `field` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def check_properties(shape: Shape, props: Mapping[str, Any]) -> None:
    """Raise EventInvalid for the first property `shape` refuses."""
    problems = Problems()
    shape.collect(dict(props), problems, where="properties")
    if problems.found:
        first = problems.found[0]
        raise EventInvalid(first.field, f"{first.field} {first.message}")


def _one(props: Mapping[str, Any], field: str, spec: Field, message: str | None = None) -> Any:
    """Check one property; `message` (if given) replaces the message of any failure but NUL's."""
    name = f"properties.{field}"
    value = props.get(field)
    if value is None:
        if spec.required:
            raise EventInvalid(name, f"{name} is required")
        return None
    problems = Problems()
    _check_value(value, spec, name, problems)
    if problems.found:
        first = problems.found[0]
        raise EventInvalid(name, f"{name} {message if message and first.code != 'unstorable' else first.message}")
    return value


def text_field(*, required: bool = False, max_len: int = 200, description: str = "") -> Field:
    """A non-empty string of at most `max_len` characters (no NUL, no lone surrogates)."""
    return Field("str", required=required, nullable=not required, min_length=1, max_length=max_len, strip=False,
                 test=str.strip, message=f"must be a non-empty string of at most {max_len} characters",
                 description=description)


def name_field(*, required: bool = False, description: str = "") -> Field:
    """An event name (as `check_name` takes it)."""
    return Field("str", required=required, nullable=not required, min_length=1, max_length=100,
                 pattern=NAME.pattern, strip=False, test=NAME.test, description=description or NAME.description)


def number_field(*, required: bool = False, minimum: float | None = None, maximum: float | None = None,
                 integer: bool = False, description: str = "") -> Field:
    """A finite number (a whole one with `integer`; 5.0 counts) within the bounds."""
    return Field("int" if integer else "number", required=required, nullable=not required, minimum=minimum,
                 maximum=maximum, whole_floats=True, description=description)


def choice_field(choices: Sequence[str], *, required: bool = False, description: str = "") -> Field:
    return Field("str", required=required, nullable=not required, choices=tuple(choices), strip=False,
                 message=f"must be one of {', '.join(choices)}", description=description)


def text(props: Mapping[str, Any], field: str, *, required: bool = False, max_len: int = 200) -> str | None:
    """`properties[field]`: a non-empty string of at most `max_len` characters."""
    spec = text_field(required=required, max_len=max_len)
    return _one(props, field, spec, spec.message)


def number(props: Mapping[str, Any], field: str, *, required: bool = False, minimum: float | None = None,
           maximum: float | None = None, integer: bool = False) -> float | int | None:
    """`properties[field]`: a finite number (a whole one with `integer`) within the bounds."""
    value = _one(props, field, number_field(required=required, minimum=minimum, maximum=maximum, integer=integer))
    return int(value) if integer and value is not None else value


def choice(props: Mapping[str, Any], field: str, choices: Sequence[str], *, required: bool = False) -> str | None:
    spec = choice_field(choices, required=required)
    return _one(props, field, spec, spec.message)


def check_name(value: Any, field: str = "event") -> str:
    """An event name: 1 to 100 characters, no control characters, no outer spaces; not `*`
    (the rollups' name for all events)."""
    problems = Problems()
    if not isinstance(value, str) or _check_value(value, NAME, field, problems) is None or problems.found:
        raise EventInvalid(field, f"{field} must be 1 to 100 characters without control characters or "
                                  "surrounding spaces, and not '*'")
    return value


def check_id(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise EventInvalid(field, f"{field} is required")
        return None
    if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
        raise EventInvalid(field, f"{field} must be 1 to 128 printable characters without spaces")
    return value


def event_schema(endpoint) -> dict[str, Any]:
    """The JSON Schema of one event sent to `endpoint` (an AnalyticsEndpoint): vibe's envelope and
    the original function's top-level names (vibe.analytics.contract); other names are kept in
    `properties`, but not those vibe records itself."""
    from vibe.analytics.contract import RESERVED, top_level

    schema = ENVELOPE.schema()
    props = schema["properties"]
    original, instead = top_level(endpoint)
    needed = []
    if endpoint.event is None:
        needed.append("event")
    elif endpoint.other_names:
        props["event"] = {"type": "string", "pattern": f"^(?:{re.escape(endpoint.event)}|{endpoint.other_names})$",
                          "description": f"may be left out ({endpoint.event})"}
    else:
        props["event"] = {"const": endpoint.event, "description": "may be left out"}
    if endpoint.properties is not None:
        props["properties"] = endpoint.properties.schema()
        if any(f.required for f in endpoint.properties.fields.values()):
            needed.append("properties")
    props.update({k: v for k, v in original.items() if k not in props})
    if needed:
        schema["required"] = needed
    schema["additionalProperties"] = True
    schema["propertyNames"] = {"not": {"enum": sorted({*RESERVED, "batch"})}}
    schema["title"] = endpoint.name
    notes = [endpoint.description] if endpoint.description else []
    if needed and instead:  # not as `anyOf`: to OpenAPI tools a top-level anyOf reads as a choice of bodies
        notes.append(f"The original function's {' and '.join(instead)} may stand in for {' and '.join(needed)}.")
    if notes:
        schema["description"] = " ".join(notes)
    return schema


def body_schema(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """A track body: one event or `{"batch": [...]}`, for any of `endpoints` (by the path's name)."""
    events = [event_schema(e) for _, e in sorted(endpoints.items())] or [ENVELOPE.schema()]
    one = events[0] if len(events) == 1 else {"anyOf": events}
    return {"oneOf": [one, {"type": "object", "required": ["batch"], "additionalProperties": False, "properties": {
        "batch": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": one},
        "sent_at": field_schema(TIME)}}],
        "description": "the event's shape depends on the endpoint named in the path"}
