"""Who a message goes to, and whether they want it: addresses, the administrator, preferences.

- An address (`address_problem`) is one plain address; `bad_address_sql` is the same rule in SQL
  for `enqueue_for`, which reads nothing.
- `user_id: "admin"` (`ADMIN`) addresses the administrator, ADMIN_EMAIL; without one such mail
  is refused (`NO_ADMIN_EMAIL`).
- A template's `preference` names a key of the profile's `notification_preferences` (the
  platform's: `payment_emails`, ...; vibe.users.sessions.NOTIFICATION_KEYS, which
  `update_profile` takes): that key set to false means no such mail, whatever the category (`switched_off`, and `switched_off_sql` for `enqueue_for`). Mail to the
  administrator has no profile and so no preferences.
"""

from __future__ import annotations

import json
import re
from typing import Any

ADMIN = "admin"


# The refusal of mail to the administrator while ADMIN_EMAIL is not set (409 at the API).
NO_ADMIN_EMAIL = "no ADMIN_EMAIL configured: mail to user_id 'admin' cannot be sent"


# What a recipient address may not hold: control characters, white space, NUL and lone
# surrogates (no header or database can carry them), and the RFC 5322 specials that would make
# the To header a list, a group or a display name. The same rule in SQL for `enqueue_for`, which
# reads nothing: PostgreSQL's regular expression, SQLite's GLOB (PostgreSQL text holds no NUL).
MAX_ADDRESS = 254
_SPACES = "\x01-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # ranges
_SPECIALS = '<>,;:"()['  # and `]` and `\\`, placed as each syntax needs them
_BAD_CHARS = re.compile("[\x00\ud800-\udfff" + _SPACES + re.escape(_SPECIALS + "]\\") + "]")
INVALID_ADDRESS = ("invalid address: not one address of at most 254 characters with one @ and no control "
                   "characters, spaces or <>,;:\"()[]\\")


def bad_address_sql(dialect: str, column: str) -> tuple[str, tuple]:
    """`address_problem` as an SQL condition on `column` (true when the address is bad), and its parameters."""
    if dialect == "postgresql":
        chars, pattern = f"{column} ~ %s", "[]" + _SPACES + _SPECIALS + "\\\\]"
    else:
        chars, pattern = f"{column} GLOB %s OR INSTR({column}, CHAR(0)) > 0", "*[]" + _SPACES + _SPECIALS + "\\]*"
    sql = (f"(LENGTH({column}) > {MAX_ADDRESS} OR {column} NOT LIKE '%%_@_%%' OR {column} LIKE '%%@%%@%%' "
           f"OR {chars})")
    return sql, (pattern,)


def address_problem(address: str) -> str | None:
    """Why `address` cannot be a recipient, or None when it can."""
    if len(address) > MAX_ADDRESS:
        return f"invalid address: longer than {MAX_ADDRESS} characters"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        return "invalid address: expected one @ with something on both sides"
    bad = _BAD_CHARS.search(address)
    if bad:
        return f"invalid address: holds {bad.group()!r}"
    return None


def switched_off_detail(key: str) -> str:
    return f"switched off in notification_preferences ({key})"


def switched_off(template, stored: Any) -> str | None:
    """The history's detail when the profile's preferences switch this template's mail off."""
    key = template.preference
    if key and stored and json.loads(stored).get(key) is False:
        return switched_off_detail(key)
    return None


def switched_off_sql(dialect: str, column: str) -> str:
    """True when the JSON text in `column` sets the key given as the one parameter to false."""
    if dialect == "postgresql":
        return f"COALESCE(CAST({column} AS json) ->> CAST(%s AS TEXT), '') = 'false'"
    return f"COALESCE(json_extract({column}, '$.' || %s), 1) = 0"
