"""Stripe billing: the webhook route, signature check, inbox, dispatcher, billing state, payments,
outcomes, the handler registry, and the `events` and `stripe` commands."""

from typing import Any


def __getattr__(name: str) -> Any:
    """`from vibe.billing import update_profile` was the flat layout's `vibe/billing.py`: its
    names are forwarded to `vibe.billing.state` for one more release, with a warning."""
    import importlib

    from vibe import deprecated

    state = importlib.import_module("vibe.billing.state")
    if name.startswith("__") or not hasattr(state, name):
        raise AttributeError(f"module 'vibe.billing' has no attribute {name!r}")
    deprecated.warn(f"vibe.billing.{name}", f"vibe.billing.state.{name}")
    return getattr(state, name)
