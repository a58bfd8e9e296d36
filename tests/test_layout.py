"""The house rules of docs/architecture.md, read off the source: which package imports which, and
the flat layout's import paths that still work for one release."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

from vibe import deprecated

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("db", "billing", "users", "analytics", "email", "ops", "web", "plugins")
SHARED = {"config", "variables", "keys", "paths", "cli", "deprecated"}  # vibe/*.py beside the packages

# What each package may import besides itself and the shared modules. The concerns (billing,
# users, analytics, email) build on the infrastructure (db, web, ops, plugins) and talk to each
# other through hooks; the edges marked "known" are the exceptions left today, each to go.
ALLOWED = {
    "db": set(),
    "plugins": {"db", "billing"},  # known: the unit-of-work context reads a profile through billing
    "web": {"db", "ops", "plugins",
            "analytics", "billing", "email", "users"},  # app.py is the composition root; known:
            # ratelimit asks analytics for the write key and users for the session
    "ops": {"db", "web", "plugins"},
    "billing": {"db", "web", "ops", "plugins"},
    "users": {"db", "web", "ops", "plugins", "billing"},  # known: actions read the billing state
    "analytics": {"db", "web", "ops", "plugins", "users"},  # known: the query cache lives in users
    "email": {"db", "web", "ops", "plugins"},
}


def vibe_imports(path: Path) -> set[str]:
    """The first component under `vibe.` of everything `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "vibe":
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("vibe.") and len(a.name.split(".")) > 1)
    return found - {"__version__"}


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_the_map_allows(package):
    wrong = {}
    for path in sorted((ROOT / "vibe" / package).glob("*.py")):
        extra = vibe_imports(path) - SHARED - {package} - ALLOWED[package]
        if extra:
            wrong[path.name] = sorted(extra)
    assert not wrong, f"vibe/{package} imports outside its allowance (docs/architecture.md): {wrong}"


def test_db_imports_no_concern_and_vibe_never_imports_the_plugins_folder():
    for path in (ROOT / "vibe" / "db").glob("*.py"):
        assert vibe_imports(path) <= {"db", "config", "variables", "paths"}, path
    for path in (ROOT / "vibe").rglob("*.py"):
        assert "plugins" not in top_level_imports(path), f"{path} imports the plugins/ folder"


def test_the_shared_keys_know_no_concern():
    """vibe/keys.py holds only the state every package shares; each package declares the keys of
    its own state in its keys.py, so ops (say) reads no other concern's state by accident."""
    assert vibe_imports(ROOT / "vibe" / "keys.py") <= {"config", "db", "web"}  # web: Shutdown's type
    for package in PACKAGES:
        path = ROOT / "vibe" / package / "keys.py"
        if path.exists():
            assert vibe_imports(path) <= {package, "db", "web"}, path


def test_each_concern_declares_its_settings_knowing_no_other_concern():
    """vibe/<package>/settings.py holds that package's variables and imports only the declaring
    machinery, so vibe.config can compose them all without a cycle."""
    declared = [ROOT / "vibe" / p / "settings.py" for p in PACKAGES if (ROOT / "vibe" / p / "settings.py").exists()]
    assert len(declared) == len(PACKAGES) - 1  # every package but the plugin host has settings
    for path in declared:
        assert vibe_imports(path) <= {"variables"}, path


def test_every_module_is_in_a_package_or_one_of_the_shared_ones():
    flat = {p.stem for p in (ROOT / "vibe").glob("*.py")} - {"__init__"}
    assert flat == SHARED | {"api"}  # api: the plugins' surface, imported by plugins only
    assert {p.name for p in (ROOT / "vibe").iterdir() if p.is_dir() and p.name != "__pycache__"} == set(PACKAGES)
    vague = [p for p in (ROOT / "vibe").rglob("*.py") if p.stem in ("utils", "helpers", "manager", "common")]
    assert not vague, vague


def test_the_map_in_docs_architecture_names_every_module_of_every_package():
    table = (ROOT / "docs" / "architecture.md").read_text().split("## Packages", 1)[1].split("\n\n", 2)[1]
    rows = {line.split("|")[1].strip().strip("`").strip("/").split("/")[-1]: line.split("|")[3]
            for line in table.splitlines()[2:]}
    assert set(rows) == set(PACKAGES)
    for package, listed in rows.items():
        modules = {p.stem for p in (ROOT / "vibe" / package).glob("*.py")} - {"__init__"}
        missing = [m for m in sorted(modules) if f"`{m}`" not in listed]
        assert not missing, f"docs/architecture.md does not list vibe/{package}/{missing}"


def test_plugins_and_examples_import_only_the_plugin_api():
    for path in [*(ROOT / "plugins").glob("*.py"), *(ROOT / "examples").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                assert module.split(".")[0] != "vibe" or module == "vibe.api", f"{path}: imports {module}"


def test_plugins_send_no_sql_of_their_own():
    """Core tables are written and read through vibe.api's domain helpers, not a plugin's SQL."""
    sql = {"execute", "executemany", "fetchall", "fetchone", "fetchval", "defer"}
    for path in [*(ROOT / "plugins").glob("*.py"), *(ROOT / "examples" / "plugins").glob("*.py")]:
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & sql, f"{path} sends SQL: {sorted(calls & sql)}"


def test_the_plugin_api_names_only_what_it_has():
    from vibe import api

    assert sorted(api.__all__) == sorted(set(api.__all__))
    assert all(hasattr(api, name) for name in api.__all__)
    assert not [n for n in api.__all__ if n.startswith("_")]


@pytest.mark.parametrize("old", sorted(deprecated.MOVED))
def test_a_flat_layout_path_still_imports_for_one_release_and_says_where_it_went(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .*use {deprecated.MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(deprecated.MOVED[old])


def test_the_old_billing_module_names_are_forwarded_with_a_warning():
    from vibe.billing import state

    with pytest.warns(DeprecationWarning, match="vibe.billing.update_profile is deprecated"):
        from vibe.billing import update_profile
    assert update_profile is state.update_profile
    with pytest.raises(ImportError):
        from vibe.billing import no_such_name  # noqa: F401


def test_no_test_module_imports_from_another_and_one_free_port_serves_them_all():
    tests = ROOT / "tests"
    free_ports = []
    for path in tests.rglob("*.py"):
        imported = top_level_imports(path)
        assert not {n for n in imported if n.startswith("test_")}, f"{path} imports a test module"
        free_ports += [path.relative_to(tests) for n in ast.walk(ast.parse(path.read_text()))
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "free_port"]
    assert free_ports == [Path("live_service.py")], f"one free_port, in live_service.py: {free_ports}"


SPAWNS = {"create_subprocess_exec", "create_subprocess_shell", "Popen", "run", "call", "check_call", "check_output"}


def test_one_live_server_helper_starts_serve_for_the_whole_suite():
    """Only tests/live_service.py starts `python run.py serve` as a process (its LiveService);
    every other test that needs the real entry point goes through it. (`run_cli("serve", ...)`
    runs a serve that refuses to start, as a CLI command: it is not a live server.)"""
    tests = ROOT / "tests"
    starters, runners = set(), set()
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and call_name(node) in SPAWNS and any(
                    isinstance(a, ast.Constant) and a.value == "serve" for a in node.args):
                starters.add(str(path.relative_to(tests)))
            if isinstance(node, ast.ClassDef) and node.name.startswith("Live"):
                runners.add(f"{path.relative_to(tests)}:{node.name}")
    assert starters == {"live_service.py"}, f"start serve through live_service.LiveService: {sorted(starters)}"
    assert runners == {"live_service.py:LiveService"}, f"one live-server class: {sorted(runners)}"


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


# Tests that assert nothing by the rule below on purpose, each with its reason. None today.
ASSERT_FREE: dict[str, str] = {}


def checks_something(test: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An `assert`, a `pytest.raises`/`warns`/`fail`, or a call of an `assert_*`/`expect*`/`check*`
    helper anywhere in the test's body (nested functions included: a predicate it waits on)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = call_name(node)
            if (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "pytest" and name in ("raises", "warns", "fail")):
                return True
            if name.startswith(("assert_", "expect", "check")):
                return True
    return False


def test_every_test_asserts_something():
    """A test that only runs code passes whatever that code does (waiting for a status, calling a
    helper that happens to assert inside, is not saying what the test expects)."""
    tests = ROOT / "tests"
    silent = [f"{path.relative_to(tests)}:{node.lineno} {node.name}"
              for path in sorted(tests.rglob("test_*.py"))
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
              and f"{path.relative_to(tests)}::{node.name}" not in ASSERT_FREE and not checks_something(node)]
    assert not silent, "tests that assert nothing:\n" + "\n".join(silent)
    tests_named = {f"{p.relative_to(tests)}::{n.name}" for p in tests.rglob("test_*.py")
                   for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert set(ASSERT_FREE) <= tests_named, "ASSERT_FREE names a test that is gone"
