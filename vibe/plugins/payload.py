"""The base of the domain hooks' payload types (docs/plugins.md, "Hook reference").

A domain hook is given frozen dataclasses (`vibe.api.Payment`, `vibe.api.SubscriptionChange`,
...), each defined with the concern that produces it (`vibe/billing/domain.py`,
`vibe/users/domain.py`). Up to 0.2 they were plain dicts; for one release a payload still
answers `payload["field"]`, `payload.get("field", default)`, `"field" in payload` and
`payload.keys()` (so `dict(payload)` works too), each with a DeprecationWarning that names the
attribute to use instead; and a plugin that announces one of these hooks with a dict
(`ctx.announce("payment_failed", payment={...})`) has it turned into the type, with a
DeprecationWarning (`typed`), so that the implementations reading attributes still work.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from vibe.deprecated import warn

P = TypeVar("P", bound="Payload")

# (hook, argument) -> the payload type it carries; filled by `carries` as the domain modules load.
CARRIED: dict[tuple[str, str], type[Payload]] = {}


def carries(*arguments: tuple[str, str]):
    """Class decorator: this payload type is what hook `(hook, argument)` carries."""
    def register(cls: type[P]) -> type[P]:
        for key in arguments:
            CARRIED[key] = cls
        return cls
    return register


def typed(hook: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hook's arguments with a dict given for a typed payload made into its type (for one
    release, with a DeprecationWarning; a dict missing a required field raises TypeError)."""
    for argument, value in kwargs.items():
        cls = CARRIED.get((hook, argument))
        if cls is not None and isinstance(value, Mapping):
            warnings.warn(f"announcing {hook} with a dict for {argument!r} is deprecated and goes in the next "
                          f"release: use {argument}=vibe.api.{cls.__name__}(...)", DeprecationWarning,
                          stacklevel=3)  # the line that called ctx.announce
            kwargs = {**kwargs, argument: cls.from_row(value)}
    return kwargs


class Payload:
    """Mixin of every hook payload dataclass: `as_dict`, `from_row`, and the old dict access."""

    __slots__ = ()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **overrides: Any) -> Self:
        """The payload from a database row (or any mapping): its fields by name, others ignored."""
        values = {name: row[name] for name in cls.field_names() if name in row}
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The payload as a plain dict (for JSON: an outbox row, an analytics event, email data)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    # -- dict-style access, for one release ------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        name = type(self).__name__
        warn(f'{name}[{key!r}] (a hook payload read as a dict)', f"the attribute {name}.{key}")
        if key not in self.field_names():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        name = type(self).__name__
        warn(f'{name}.get({key!r}) (a hook payload read as a dict)', f"the attribute {name}.{key}")
        return getattr(self, key) if key in self.field_names() else default

    def __contains__(self, key: object) -> bool:
        name = type(self).__name__
        warn(f"`... in {name}` (a hook payload read as a dict)", f"the attributes of {name}")
        return key in self.field_names()

    def keys(self) -> tuple[str, ...]:
        name = type(self).__name__
        warn(f"{name}.keys() (a hook payload read as a dict)", f"the attributes of {name} or {name}.as_dict()")
        return self.field_names()
