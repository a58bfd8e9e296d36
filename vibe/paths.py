"""Where the project's own folders are: `sql/`, `templates/` and `plugins/`.

Found through `importlib.resources` from the `vibe` package, wherever it is: an installed wheel
carries them inside the package, as `vibe/_data/` (setup.py's build step puts them there); a
source checkout, run in place or installed editable (`pip install -e .`), has them beside
`vibe/`, where docs/architecture.md keeps them. The folders are real directories: migrations,
Jinja2 and the plugin host read them by path.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

FOLDERS = ("sql", "templates", "plugins")

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _on_disk(folder: Traversable) -> Path:
    if isinstance(folder, Path):
        return folder
    # Not on the file system (a zipped install): extracted for the process' lifetime (Python 3.12+).
    return _extracted.enter_context(as_file(folder))


def _data_root() -> Path:
    package = files("vibe")
    bundled = package / "_data"
    if bundled.is_dir():
        return _on_disk(bundled)
    if isinstance(package, Path) and all((package.parent / name).is_dir() for name in FOLDERS):
        return package.parent
    raise RuntimeError(f"vibe's {', '.join(f'{name}/' for name in FOLDERS)} folders are neither in the "
                       f"package ({bundled}) nor beside it: reinstall vibe from a wheel or a checkout")


# The folder that holds the three (the source tree's root, or the package's `_data/`).
ROOT = _data_root()
SQL_DIR = ROOT / "sql"
TEMPLATES_DIR = ROOT / "templates"
PLUGINS_DIR = ROOT / "plugins"
