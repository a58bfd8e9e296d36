"""The build step that ships `sql/`, `plugins/` and `templates/` inside the package.

The source tree keeps them as top-level folders (docs/architecture.md); a built wheel carries
them as package data under `vibe/_data/`, where `vibe.paths` finds them through
`importlib.resources`. Everything else about the package is declared in setup.cfg.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("sql", "plugins", "templates")


class build_py_with_data(build_py):
    """build_py, plus a copy of each BUNDLED folder in `<build>/vibe/_data/` (without bytecode)."""

    def bundled(self) -> dict[str, str]:
        """{file in the build: its source}, for every file of the BUNDLED folders."""
        return {
            os.path.join(self.build_lib, "vibe", "_data", *source.parts): str(source)
            for folder in BUNDLED
            for source in sorted(Path(folder).rglob("*"))
            if source.is_file() and "__pycache__" not in source.parts and source.suffix != ".pyc"
        }

    def run(self) -> None:
        super().run()
        for target, source in self.bundled().items():
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *self.bundled()]

    def get_output_mapping(self) -> dict[str, str]:
        # setuptools' strict editable install (`pip install -e . --config-settings
        # editable_mode=strict`) links these to the source files instead of copying them.
        return {**super().get_output_mapping(), **self.bundled()}


setup(cmdclass={"build_py": build_py_with_data})
