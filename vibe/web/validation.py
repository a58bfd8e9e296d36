"""Request data checked against a declared shape, naming every wrong field at once.

    clean = check(data, {"display_name": Field("str", max_length=80)}, where="data")

collects every problem (missing, unknown, refused, wrong type, out of range) and raises one
`ApiError(400, "invalid_data")` whose `details.errors` lists `{"field", "message"}` for each,
and whose message names the fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

from vibe.web.errors import ApiError


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str  # str | int | number | bool | list | object
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None


class Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def raise_if_any(self) -> None:
        if self.errors:
            names = ", ".join(dict.fromkeys(e["field"] for e in self.errors))
            raise ApiError(400, "invalid_data", f"Invalid request data: {names}.", details={"errors": self.errors})


def invalid(field: str, message: str) -> ApiError:
    """The 400 for one wrong field found after the shape check (e.g. against the database)."""
    problems = Problems()
    problems.add(field, message)
    return ApiError(400, "invalid_data", f"Invalid request data: {field}.", details={"errors": problems.errors})


# Characters no database text column can hold: PostgreSQL refuses NUL, and a lone surrogate
# (valid in JSON as an escape) cannot be encoded as UTF-8.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_value(value: Any, spec: Field, name: str, problems: Problems) -> Any:
    if value is None:
        if not spec.nullable:
            problems.add(name, "may not be null")
        return None
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            problems.add(name, "must be a string")
            return None
        value = value.strip()
        if UNSTORABLE.search(value):
            problems.add(name, "may not contain NUL characters or unpaired UTF-16 surrogates")
            return None
        if spec.max_length is not None and len(value) > spec.max_length:
            problems.add(name, f"must be at most {spec.max_length} characters")
        elif spec.pattern and not re.fullmatch(spec.pattern, value):
            problems.add(name, "is not in the expected format")
    elif kind == "bool":
        if not isinstance(value, bool):
            problems.add(name, "must be true or false")
            return None
    elif kind in ("int", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)) \
                or (isinstance(value, float) and not math.isfinite(value)):
            problems.add(name, "must be a whole number" if kind == "int" else "must be a number")
            return None
        if spec.minimum is not None and value < spec.minimum or spec.maximum is not None and value > spec.maximum:
            problems.add(name, f"must be between {spec.minimum} and {spec.maximum}")
    elif kind == "list":
        if not isinstance(value, list):
            problems.add(name, "must be a list")
            return None
        if spec.max_length is not None and len(value) > spec.max_length:
            problems.add(name, f"may hold at most {spec.max_length} items")
    elif kind == "object" and not isinstance(value, dict):
        problems.add(name, "must be an object")
        return None
    if spec.choices is not None and value not in spec.choices:
        problems.add(name, f"must be one of {', '.join(map(str, spec.choices))}")
    return value


def collect(data: Any, shape: Mapping[str, Field], problems: Problems, *, where: str = "data",
            refused: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check `data` against `shape`, adding problems; returns the clean fields given."""
    if not isinstance(data, dict):
        problems.add(where, "must be an object")
        return {}
    clean: dict[str, Any] = {}
    for key in data:
        if key not in shape:
            reason = (refused or {}).get(key)
            problems.add(f"{where}.{key}", reason or "is not a known field")
    for key, spec in shape.items():
        if key not in data:
            if spec.required:
                problems.add(f"{where}.{key}", "is required")
            continue
        clean[key] = _check_value(data[key], spec, f"{where}.{key}", problems)
    return clean


def check(data: Any, shape: Mapping[str, Field], *, where: str = "data",
          refused: Mapping[str, str] | None = None) -> dict[str, Any]:
    problems = Problems()
    clean = collect(data, shape, problems, where=where, refused=refused)
    problems.raise_if_any()
    return clean
