"""Reading a JSON body the one way every route does: valid UTF-8 JSON, nested at most MAX_DEPTH.

Deep nesting is refused where a body comes in (400 `too_deep`), not found later by whatever walks
it: a recursive size estimate, a template, `json.dumps` of a journey. The depth is measured
iteratively, so a body nested 10,000 deep costs a loop, not the stack.
"""

from __future__ import annotations

import json
from typing import Any

from vibe.web.errors import ApiError

MAX_DEPTH = 32  # objects and arrays inside each other; the platform's deepest body has 4


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep `value` nests (a scalar is 0, `{}` is 1), counted up to `limit + 1` at most."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, what: str = "The body", limit: int = MAX_DEPTH) -> Any:
    """`value`, or 400 `too_deep` when it nests deeper than `limit`."""
    if nesting_depth(value, limit) > limit:
        raise ApiError(400, "too_deep", f"{what} nests objects and arrays more than {limit} deep.",
                       details={"max_depth": limit})
    return value


def load_json(raw: bytes | str, what: str = "The body", limit: int = MAX_DEPTH) -> Any:
    """Parse `raw` as JSON (400 `invalid_json` when it is not) and check its depth."""
    try:
        value = json.loads(raw)
    except RecursionError:  # deeper than the parser's own stack: too deep by far
        raise ApiError(400, "too_deep", f"{what} nests objects and arrays more than {limit} deep.",
                       details={"max_depth": limit}) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON: {exc}.") from None
    # Each level of nesting opens with a `{` or `[` of the text: with no more of them than the
    # limit (a Stripe event has about 20), the value cannot nest deeper, and need not be walked.
    opens = (b"{", b"[") if isinstance(raw, bytes) else ("{", "[")
    if raw.count(opens[0]) + raw.count(opens[1]) <= limit:
        return value
    return check_depth(value, what, limit)
