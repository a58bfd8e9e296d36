"""One declaration per setting (vibe/<concern>/settings.py): the settings objects, check-config
and the README's configuration table all come from it."""

import ast
import re
from pathlib import Path

import pytest
from conftest import run_cli

from vibe.config import VARIABLES, ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


async def test_the_readme_table_is_what_the_declarations_print():
    code, out, _ = await run_cli("check-config", "--table", env={})
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert code == 0 and out, "check-config --table printed nothing"
    assert shown == out, "README's configuration table differs: run `python run.py check-config --table`"


def test_each_variable_is_declared_once_with_its_meaning():
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(v.meaning and v.concern and v.field for v in VARIABLES)
    looks_secret = [v.name for v in VARIABLES if re.search(r"(_KEY|_SECRET|_PASSWORD|_DSN)$", v.name)]
    assert looks_secret and all(v.secret or v.credentials for v in VARIABLES if v.name in looks_secret)


def test_no_module_reads_a_variable_the_declarations_do_not_name():
    """Every "UPPER_CASE" string a module of vibe/ passes to env.get / os.environ is declared."""
    declared = {v.name for v in VARIABLES}
    read = set()
    for path in (ROOT / "vibe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and re.fullmatch(r"[A-Z][A-Z0-9_]+", str(node.args[0].value)):
                read.add(node.args[0].value)
    assert read and read <= declared, sorted(read - declared)


@pytest.mark.parametrize("var", VARIABLES, ids=lambda v: v.name)
def test_a_declared_default_is_what_an_empty_environment_gives(var):
    settings = Settings.from_env({})
    holder = settings if var.concern == "service" else getattr(settings, var.concern)
    expected = var.derive({}) if var.derive else var.default
    assert getattr(holder, var.field) == expected


def test_a_bad_value_names_its_variable():
    for name, value in (("MAX_DB_CONNECTIONS", "0"), ("STRIPE_LIVEMODE", "sometimes"),
                        ("RATE_LIMIT_SHRINK_FACTOR", "2"), ("EMAIL_SMTP_URL", "http://x"),
                        ("REFERRAL_COMMISSION_RATE", "1.5"), ("VIBE_STRIPE_WORKER", "maybe")):
        with pytest.raises(ConfigError, match=f"^{name}: "):
            Settings.from_env({name: value})
