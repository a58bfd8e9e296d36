"""A package that runs from anywhere (issue 14): `sql/`, `plugins/` and `templates/` ship inside
the wheel and the sdist, `vibe.paths` finds them through `importlib.resources`, and the `vibe`
console script works from an empty directory with its data in `./var` there.

The sdist and the wheel are built once per session with `python -m build` (the wheel from the
sdist, so a file the sdist lacks is missing from the wheel too; PyPI serves the build
requirements, as for `pip install`). Installing the wheel into a fresh virtual environment
outside the checkout and serving a signed event from it, on SQLite and on PostgreSQL, takes
too long for the suite: `.ci/wheel-check` does it, called from `.ci/run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

import vibe
from vibe import paths

FOLDERS = ("sql", "plugins", "templates")
# The checkout's migrations, as `migrate --json` names them: 001_profiles, 002_billing, ...
MIGRATIONS = sorted({p.name.split(".")[0] for p in (ROOT / "sql").glob("*.sql")})


def migrated(stdout: str) -> list[str]:
    """The migrations `migrate --json` reports applied."""
    return [f"{m['version']:03d}_{m['name']}" for m in json.loads(stdout)["migrations"] if m["applied"]]


def source_files(folder: str) -> set[str]:
    """The files of one of the checkout's folders, as paths relative to the checkout."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no VIBE_DATA_DIR, DATABASE_URL or PYTHONPATH."""
    return {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}, **extra}


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          check=False, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("vibe-*.whl")
    (sdist,) = out.glob("vibe-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.slow
def test_the_wheel_carries_the_folders_inside_the_package(dists):
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    bundled = {n.removeprefix("vibe/_data/") for n in names if n.startswith("vibe/_data/")}
    assert bundled == set().union(*map(source_files, FOLDERS))
    assert {"sql/001_profiles.sql", "plugins/stripe_customers.py", "templates/email/de/welcome.html",
            "templates/pages/dashboard.html"} <= bundled
    # Data files, not a package: the plugin host loads plugins/*.py by path, never as vibe._data.*
    assert not any(n.endswith(("__init__.py", ".pyc")) for n in bundled)
    assert not any(n.startswith(("sql/", "plugins/", "templates/", "tests/")) for n in names)
    assert "vibe/paths.py" in names and "vibe/cli.py" in names
    entry_points = zipfile.ZipFile(dists["wheel"]).read(
        f"vibe-{vibe.__version__}.dist-info/entry_points.txt").decode()
    assert "vibe = vibe.cli:main" in entry_points


@pytest.mark.slow
def test_the_sdist_carries_the_folders_and_the_build_step(dists):
    top = f"vibe-{vibe.__version__}/"
    with tarfile.open(dists["sdist"]) as sdist:
        names = {n.removeprefix(top) for n in sdist.getnames()}
    for folder in FOLDERS:
        assert source_files(folder) <= names, folder
    assert {"setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "vibe/paths.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.slow
def test_the_unpacked_wheel_runs_from_an_empty_directory(dists, tmp_path):
    """The wheel's files on sys.path (what pip installs, without a venv): `vibe.paths` points into
    the package, the migrations and the plugins come from there, and the data goes to ./var."""
    site, cwd, seen = tmp_path / "site", tmp_path / "empty", tmp_path / "seen.json"
    zipfile.ZipFile(dists["wheel"]).extractall(site)
    cwd.mkdir()
    script = ("import json, sys; from pathlib import Path; import vibe.paths as p; from vibe.cli import main; "
              "code = main(['migrate', '--json']); "
              "Path(sys.argv[1]).write_text(json.dumps({'root': str(p.ROOT), 'sql': str(p.SQL_DIR), "
              "'plugins': str(p.PLUGINS_DIR), 'modules': sorted(m for m in sys.modules if 'stripe_customers' in m "
              "or m.startswith('vibe._data'))})); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", script, str(seen)], cwd=cwd, env=clean_env(PYTHONPATH=str(site)),
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = site / "vibe" / "_data"
    assert json.loads(seen.read_text()) == {
        "root": str(data), "sql": str(data / "sql"), "plugins": str(data / "plugins"),
        "modules": ["vibe_plugin_plugins_stripe_customers"],  # loaded once, by path, not as vibe._data.*
    }
    assert migrated(proc.stdout) == MIGRATIONS
    assert [p.name for p in cwd.iterdir()] == ["var"] and (cwd / "var" / "vibe.db").is_file()


def test_paths_name_the_folders_that_hold_the_files():
    # In the checkout (the suite runs from it, installed editable or not) they are its own folders.
    assert paths.ROOT == ROOT
    assert (paths.SQL_DIR, paths.TEMPLATES_DIR, paths.PLUGINS_DIR) == (ROOT / "sql", ROOT / "templates", ROOT / "plugins")
    assert {p.name for p in paths.SQL_DIR.glob("*.sql")} >= {"001_profiles.sql", "002_billing.sql", "030_email.sql"}
    assert {p.name for p in paths.TEMPLATES_DIR.iterdir() if p.is_dir()} >= {"email", "pages"}
    assert (paths.TEMPLATES_DIR / "email" / "de" / "welcome.html").is_file()
    assert (paths.TEMPLATES_DIR / "pages" / "dashboard.html").is_file()
    assert {"stripe_customers.py", "stripe_checkout.py", "email_billing.py"} <= {p.name for p in paths.PLUGINS_DIR.glob("*.py")}


def console_script() -> Path:
    script = Path(sys.executable).parent / "vibe"
    if not script.exists():
        pytest.skip(f"no `vibe` console script beside {sys.executable} (install the package: pip install -e .)")
    return script


def test_the_console_script_helps_from_an_empty_directory(tmp_path):
    proc = subprocess.run([str(console_script()), "--help"], cwd=tmp_path, env=clean_env(),
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout and "migrate" in proc.stdout and "events" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # --help leaves no data behind


def test_the_console_script_keeps_its_data_in_var_of_the_working_directory(tmp_path):
    proc = subprocess.run([str(console_script()), "migrate", "--json"], cwd=tmp_path, env=clean_env(),
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert migrated(proc.stdout) == MIGRATIONS
    assert (tmp_path / "var" / "vibe.db").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["var"]
