"""What a message must be to be queued: its template (by name or alias), its data, its priority.

`data` is free-form, as the platform sends it: the keys a template declares are validated by
the template (required ones must be there, each of its kind); any other key is kept and given
to the template, which shows it only if it uses it (HTML autoescaped). Such a key's value must
be JSON (a string, a finite number, true/false, null, or lists and objects of those) nesting at
most `MAX_FREE_DEPTH` levels, and hold no NUL or lone surrogate.

Priorities order the queue: `urgent` (and `send_immediately`) before `high`, `normal` (the
default) and `low`; stored as their rank (0 to 3), the claim's first sort key.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from vibe.email.templates import EmailTemplate, TemplateError
from vibe.web.json_body import nesting_depth

MAX_FREE_DEPTH = 5  # lists and objects inside each other, in one undeclared data key
PRIORITIES = ("urgent", "high", "normal", "low")  # rank = position: the queue sends lower ranks first
NORMAL = PRIORITIES.index("normal")


def rank(priority: str | None = None, send_immediately: bool = False) -> int:
    """A priority's rank; `send_immediately` is urgent."""
    return 0 if send_immediately else PRIORITIES.index(priority or "normal")


def priority_name(value: Any) -> str:
    """A stored rank as its name (a row from before priorities: normal)."""
    return PRIORITIES[int(value)] if value is not None and 0 <= int(value) < len(PRIORITIES) else "normal"


def aliases(templates: Mapping[str, EmailTemplate]) -> dict[str, str]:
    """Every alias -> its template's name; TemplateError when an alias is taken twice."""
    found: dict[str, str] = {}
    for template in templates.values():
        for alias in template.aliases:
            if alias in templates or alias in found:
                raise TemplateError(f"email template {template.name}: the alias {alias!r} is already a name or alias")
            found[alias] = template.name
    return found


def find_template(templates: Mapping[str, EmailTemplate], name: str) -> EmailTemplate | None:
    """The template named `name`, or the one that has it as an alias."""
    if name in templates:
        return templates[name]
    return next((t for t in templates.values() if name in t.aliases), None)


def data_problems(template: EmailTemplate, data: Any, *, http: bool = False) -> list[str]:
    """What is wrong with `data` for `template` (empty when it may be queued)."""
    if not isinstance(data, dict):
        return ["data: expected a JSON object"]
    declared = {k: v for k, v in data.items() if k in template.data.fields}
    problems = template.validate(declared, http=http)
    for key, value in data.items():
        if key not in declared:
            problem = free_problem(key, value)
            if problem:
                problems.append(f"data.{key}: {problem}")
    return problems


def free_problem(key: Any, value: Any) -> str | None:
    """Why an undeclared data key cannot be kept (None when it can)."""
    if not isinstance(key, str) or _unstorable(key):
        return "a key must be text without NUL characters or unpaired UTF-16 surrogates"
    if nesting_depth(value, MAX_FREE_DEPTH) > MAX_FREE_DEPTH:
        return f"nests lists and objects more than {MAX_FREE_DEPTH} deep"
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(k, str) and not _unstorable(k) for k in item):
                return "object keys must be text without NUL characters or unpaired UTF-16 surrogates"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if _unstorable(item):
                return "may not contain NUL characters or unpaired UTF-16 surrogates"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "must be JSON: a number must be finite"
        elif item is not None and not isinstance(item, (bool, int)):
            return f"must be JSON (a string, number, boolean, null, list or object), not {type(item).__name__}"
    return None


def _unstorable(text: str) -> bool:
    return any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text)
