"""Request data checked against a declared shape, naming every wrong field at once; and the same
declaration as JSON Schema, for /openapi.json (vibe.web.openapi).

    EDIT = Shape({"display_name": Field("str", max_length=80)})
    clean = EDIT.check(data, where="data")      # or check(data, EDIT.fields, where="data")
    EDIT.schema()                               # {"type": "object", "properties": {...}, ...}

`check` collects every problem (missing, unknown, refused, wrong type, out of range) and raises
one `ApiError(400, "invalid_data")` whose `details.errors` lists `{"field", "message"}` for each
("must be a string") and whose message names each field once ("Invalid request data:
data.name must be a string."; `name_once`). Every body the service reads (user actions, analytics
events and endpoints' properties, email requests and templates' data, the Segment door) is one
`Shape`; its `schema()` is what the document says, so the two cannot drift apart. What a schema
cannot say (a `test` callable, a choice list known only at run time: `choices="name"` with
`vocab={"name": (...)}`) is named in the field's description.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

from vibe.web import times
from vibe.web.errors import ApiError

KINDS = {"str": "string", "int": "integer", "number": "number", "bool": "boolean", "list": "array",
         "object": "object"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One value. `kind`: str | int | number | bool | list | object | time | any, or two joined by
    `|` ("str|int"). A `time` is ISO 8601 or Unix seconds and is returned as Unix seconds (an int
    when whole; vibe.web.times); `minimum`/`maximum` then bound the seconds. Lengths count characters of a string (stripped, unless `strip=False`) or items
    of a list. `pattern` must match the whole string (the schema anchors it)."""

    kind: str
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    choices: tuple | str | None = None  # a str: the name of a list given at check time (`vocab`)
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    min_length: int | None = None
    items: Field | Shape | None = None  # a list's items
    check_items: bool = True  # False: the items are documented, and checked one by one by the caller
    shape: Shape | None = None  # an object's fields (None: any object)
    strip: bool = True  # str: checked and returned without surrounding white space
    whole_floats: bool = False  # int: 5.0 is a whole number too (as in JSON Schema)
    test: Callable[[Any], Any] | None = None  # one more check, beyond what a schema can say
    message: str | None = None  # the message when `test`, `pattern`, the range or the choices fail
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Problem:
    field: str
    message: str
    code: str  # required | null | type | unknown | value | length | unstorable | empty


class Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []
        self.found: list[Problem] = []

    def add(self, field: str, message: str, code: str = "value") -> None:
        self.errors.append({"field": field, "message": message})
        self.found.append(Problem(field, message, code))

    def summary(self) -> str:
        """One sentence naming each wrong field once: `data.a must be a string; data.b is required`."""
        return "; ".join(dict.fromkeys(name_once(e["field"], e["message"]) for e in self.errors))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, "invalid_data", f"Invalid request data: {self.summary()}.",
                           details={"errors": self.errors})


def name_once(field: str, message: str) -> str:
    """A problem as a sentence naming its field once. A problem's own message names no field
    ("must be a string"); one written as a sentence (an analytics plugin's `EventInvalid`) may
    already: then it is kept as it is."""
    return message if not field or field in message else f"{field} {message}"


def invalid(field: str, message: str) -> ApiError:
    """The 400 for one wrong field found after the shape check (e.g. against the database)."""
    problems = Problems()
    problems.add(field, message)
    return ApiError(400, "invalid_data", f"Invalid request data: {problems.summary()}.",
                    details={"errors": problems.errors})


# Characters no database text column can hold: PostgreSQL refuses NUL, and a lone surrogate
# (valid in JSON as an escape) cannot be encoded as UTF-8.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


TYPE_MESSAGES = {"time": "must be an ISO 8601 time or Unix seconds", "str": "must be a string", "bool": "must be true or false", "int": "must be a whole number",
                 "number": "must be a number", "list": "must be a list", "object": "must be an object"}
TYPE_NAMES = {"time": "an ISO 8601 time or Unix seconds", "str": "a string", "bool": "true or false", "int": "a whole number", "number": "a number",
              "list": "a list", "object": "an object"}


def _is_kind(value: Any, kind: str, spec: Field) -> bool:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "time":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return kind == "number" or isinstance(value, int) or (spec.whole_floats and value.is_integer())
    return isinstance(value, list if kind == "list" else dict)


def _check_value(value: Any, spec: Field, name: str, problems: Problems, vocab: Mapping | None = None) -> Any:
    if value is None:
        if not spec.nullable:
            problems.add(name, "may not be null", "null")
        return None
    kinds = spec.kind.split("|")
    kind = next((k for k in kinds if _is_kind(value, k, spec)), None)
    if kind is None:
        message = TYPE_MESSAGES[kinds[0]] if len(kinds) == 1 else \
            "must be " + " or ".join(TYPE_NAMES[k] for k in kinds)
        problems.add(name, message, "type")
        return None
    fails = spec.message
    if kind == "time":
        try:
            seconds = times.to_seconds(value)
        except ValueError as exc:
            problems.add(name, str(exc), "type")
            return None
        value = int(seconds) if seconds.is_integer() else seconds
        kind = "number"
    if kind == "str":
        value = value.strip() if spec.strip else value
        if UNSTORABLE.search(value):
            problems.add(name, "may not contain NUL characters or unpaired UTF-16 surrogates", "unstorable")
            return None
        if spec.max_length is not None and len(value) > spec.max_length:
            problems.add(name, f"must be at most {spec.max_length} characters", "length")
        elif spec.min_length is not None and len(value) < spec.min_length:
            problems.add(name, "may not be empty" if spec.min_length == 1 else
                         f"must be at least {spec.min_length} characters", "length")
        elif spec.pattern and not re.fullmatch(spec.pattern, value):
            problems.add(name, fails or "is not in the expected format")
    elif kind in ("int", "number"):
        if spec.minimum is not None and value < spec.minimum or spec.maximum is not None and value > spec.maximum:
            problems.add(name, fails or (f"must be at least {spec.minimum}" if spec.maximum is None else
                                         f"must be between {spec.minimum} and {spec.maximum}"))
    elif kind == "list":
        if spec.max_length is not None and len(value) > spec.max_length:
            problems.add(name, f"may hold at most {spec.max_length} items", "length")
        elif spec.min_length is not None and len(value) < spec.min_length:
            problems.add(name, "must hold at least one item" if spec.min_length == 1 else
                         f"must hold at least {spec.min_length} items", "length")
        elif spec.items is not None and spec.check_items:
            value = [_check_item(item, spec.items, f"{name}[{i}]", problems, vocab) for i, item in enumerate(value)]
    elif kind == "object" and spec.shape is not None:
        value = spec.shape.collect(value, problems, where=name, vocab=vocab)
    choices = (vocab or {}).get(spec.choices) if isinstance(spec.choices, str) else spec.choices
    if choices is not None and value not in choices:
        problems.add(name, fails or f"must be one of {', '.join(map(str, choices))}")
    elif spec.test is not None and not spec.test(value):
        problems.add(name, fails or "is not acceptable")
    return value


def problems_of(value: Any, spec: Field, name: str, vocab: Mapping | None = None) -> list[Problem]:
    """What is wrong with one value (a field checked on its own)."""
    problems = Problems()
    if value is None and spec.required:
        problems.add(name, "is required", "required")
    else:
        _check_value(value, spec, name, problems, vocab)
    return problems.found


def _check_item(item: Any, spec: Field | Shape, name: str, problems: Problems, vocab: Mapping | None) -> Any:
    if isinstance(spec, Shape):
        return spec.collect(item, problems, where=name, vocab=vocab)
    return _check_value(item, spec, name, problems, vocab)


@dataclasses.dataclass(frozen=True)
class Shape:
    """A JSON object's fields. `closed`: other keys are refused (`refused` gives some a reason of
    their own); `at_least_one`: an empty object is refused; `null_is_absent`: a null is read as
    a field not given (a required one is then missing)."""

    fields: Mapping[str, Field]
    closed: bool = True
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)
    at_least_one: bool = False
    null_is_absent: bool = False
    unknown: str = "is not a known field"
    description: str = ""
    any_of: tuple[str, ...] = ()  # at least one of these fields must be given

    def collect(self, data: Any, problems: Problems, *, where: str = "data",
                vocab: Mapping | None = None) -> dict[str, Any]:
        """Check `data`, adding problems; returns the clean fields given."""
        if not isinstance(data, dict):
            problems.add(where or "body", "must be an object", "type")
            return {}
        before = len(problems.errors)
        clean: dict[str, Any] = {}
        if self.closed:
            for key in data:
                if key not in self.fields:
                    problems.add(f"{where}.{key}" if where else key, self.refused.get(key) or self.unknown, "unknown")
        for key, spec in self.fields.items():
            name = f"{where}.{key}" if where else key
            if key not in data or (self.null_is_absent and data[key] is None):
                if spec.required:
                    problems.add(name, "is required", "required")
                continue
            clean[key] = _check_value(data[key], spec, name, problems, vocab)
        if self.any_of and not any(clean.get(k) is not None for k in self.any_of) and len(problems.errors) == before:
            problems.add(f"{where}.{self.any_of[0]}" if where else self.any_of[0],
                         f"one of {', '.join(self.any_of)} is required", "required")
        if self.at_least_one and not clean and len(problems.errors) == before:
            problems.add(where, f"name at least one of {', '.join(self.fields)}", "empty")
        return clean

    def check(self, data: Any, *, where: str = "data", vocab: Mapping | None = None) -> dict[str, Any]:
        problems = Problems()
        clean = self.collect(data, problems, where=where, vocab=vocab)
        problems.raise_if_any()
        return clean

    def schema(self, vocab: Mapping | None = None) -> dict[str, Any]:
        """This shape as JSON Schema (2020-12, as OpenAPI 3.1 uses it)."""
        out: dict[str, Any] = {"type": "object", "properties": {
            key: field_schema(spec, vocab, nullable=self.null_is_absent and not spec.required)
            for key, spec in self.fields.items()}}
        required = [key for key, spec in self.fields.items() if spec.required]
        if required:
            out["required"] = required
        out["additionalProperties"] = not self.closed
        if self.at_least_one:
            out["minProperties"] = 1
        if self.any_of:
            out["anyOf"] = [{"required": [k]} for k in self.any_of]
        if self.description:
            out["description"] = self.description
        return out


def field_schema(spec: Field, vocab: Mapping | None = None, *, nullable: bool = False) -> dict[str, Any]:
    """One field as JSON Schema: what `_check_value` accepts."""
    kinds = spec.kind.split("|")
    out: dict[str, Any] = {}
    nullable = nullable or spec.nullable
    if "any" not in kinds:
        # a time: Unix seconds, or a string that is an ISO 8601 time (`format` binds strings only)
        types = [t for k in kinds for t in (("number", "string") if k == "time" else (KINDS[k],))]
        types = list(dict.fromkeys(types)) + (["null"] if nullable else [])
        out["type"] = types[0] if len(types) == 1 else types
    if "time" in kinds:
        out["format"] = "date-time"
    if "str" in kinds:
        if spec.max_length is not None:
            out["maxLength"] = spec.max_length
        if spec.min_length is not None:
            out["minLength"] = spec.min_length
        if spec.pattern:
            out["pattern"] = f"^(?:{spec.pattern})$"
    if "list" in kinds:
        if spec.max_length is not None:
            out["maxItems"] = spec.max_length
        if spec.min_length is not None:
            out["minItems"] = spec.min_length
        if spec.items is not None:
            out["items"] = spec.items.schema(vocab) if isinstance(spec.items, Shape) else field_schema(spec.items, vocab)
    if spec.minimum is not None:
        out["minimum"] = spec.minimum
    if spec.maximum is not None:
        out["maximum"] = spec.maximum
    if "object" in kinds and spec.shape is not None:
        out.update({k: v for k, v in spec.shape.schema(vocab).items() if k != "type"})
    choices = (vocab or {}).get(spec.choices) if isinstance(spec.choices, str) else spec.choices
    if choices is not None:
        out["enum"] = [*choices, *([None] if nullable else [])]
    if spec.description or "time" in kinds:
        out["description"] = spec.description or times.INPUT_SCHEMA["description"]
    return out


def _shape(shape: Mapping[str, Field] | Shape, refused: Mapping[str, str] | None) -> Shape:
    if isinstance(shape, Shape):
        return dataclasses.replace(shape, refused=refused) if refused else shape
    return Shape(shape, refused=refused or {})


def collect(data: Any, shape: Mapping[str, Field] | Shape, problems: Problems, *, where: str = "data",
            refused: Mapping[str, str] | None = None, vocab: Mapping | None = None) -> dict[str, Any]:
    """Check `data` against `shape`, adding problems; returns the clean fields given."""
    return _shape(shape, refused).collect(data, problems, where=where, vocab=vocab)


def check(data: Any, shape: Mapping[str, Field] | Shape, *, where: str = "data",
          refused: Mapping[str, str] | None = None, vocab: Mapping | None = None) -> dict[str, Any]:
    return _shape(shape, refused).check(data, where=where, vocab=vocab)
