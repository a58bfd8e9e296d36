"""The plugin manager: one per app, built from `plugins/`, the `vibe` entry points, and the
folders in VIBE_PLUGINS_DIRS. Registration hooks are collected here once, at start-up."""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pluggy

from vibe.config import Settings
from vibe.paths import PLUGINS_DIR
from vibe.plugins import hookspecs

log = logging.getLogger(__name__)

# vibe's own modules that implement hooks (CLI commands); loaded like any other plugin.
BUILTIN_MODULES = ("vibe.billing.events_cli", "vibe.users.cli", "vibe.billing.stripe_cli", "vibe.analytics.cli",
                   "vibe.email.cli", "vibe.ops.cli", "vibe.ops.deploy_cli")


# The hooks through which plugins register things, called once when the manager is built.
REGISTRATION_HOOKS = ("register_stripe_handlers", "register_analytics_endpoints", "register_email_templates")


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus `registered`: what each registration hook returned, by hook name,
    as (plugin name, value) in call order. Collected once, as the manager is built; the code
    that uses a kind (billing's handler registry, analytics, email) checks and merges its own."""

    registered: dict[str, list[tuple[str, Any]]]

    def collect_registrations(self, settings: Settings) -> None:
        args = {"settings": settings}
        self.registered = {
            name: [(impl.plugin_name, impl.function(**{a: args[a] for a in impl.argnames}))
                   for impl in reversed(getattr(self.hook, name).get_hookimpls())
                   if not (impl.wrapper or impl.hookwrapper)]
            for name in REGISTRATION_HOOKS
        }


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid (a start-up error)."""


def _load_file(path: Path) -> types.ModuleType:
    name = f"vibe_plugin_{path.parent.name}_{path.stem}"
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"plugin {path}: {type(exc).__name__}: {exc}") from exc
    return module


def plugin_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise PluginError(f"plugin folder {directory} does not exist")
    return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))


def build_plugin_manager(settings: Settings, *, extra: tuple[object, ...] = ()) -> PluginManager:
    """Load every plugin (`extra` plugin objects, for tests, last), then collect what the
    registration hooks return."""
    pm = PluginManager("vibe")
    pm.add_hookspecs(hookspecs)
    for name in settings.disabled_plugins:
        pm.set_blocked(name)
    for modname in BUILTIN_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
    for directory in (PLUGINS_DIR, *map(Path, settings.plugin_dirs)):
        for path in plugin_files(directory):
            if pm.is_blocked(path.stem):
                continue
            module = _load_file(path.resolve())
            if pm.get_plugin(path.stem) is not None:
                raise PluginError(f"two plugins are named {path.stem!r} ({path})")
            pm.register(module, name=path.stem)
    pm.load_setuptools_entrypoints("vibe")
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    pm.collect_registrations(settings)
    return pm

