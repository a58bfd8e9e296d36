"""Import paths of the flat layout (before 0.2) that docs/plugins.md and examples/ showed.

Each still imports, for one release, as the module it moved to, with a DeprecationWarning that
names the new path. `vibe.billing` is a package now: its old functions are forwarded by
`vibe/billing/__init__.py` the same way.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "vibe.hookspecs": "vibe.plugins.hookspecs",
    "vibe.analytics_model": "vibe.analytics.model",
    "vibe.analytics_store": "vibe.analytics.store",
    "vibe.email_queue": "vibe.email.queue",
    "vibe.email_templates": "vibe.email.templates",
    "vibe.payments": "vibe.billing.payments",
    "vibe.outcomes": "vibe.billing.outcomes",
    "vibe.health": "vibe.ops.health",
}


def warn(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and goes in the next release: use {new}", DeprecationWarning, stacklevel=3)


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old name with the module it moved to (the same module object)."""

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warn(spec.name, MOVED[spec.name])
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module it moved to is already imported."""


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
