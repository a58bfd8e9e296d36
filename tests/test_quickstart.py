"""The README's quick start, run as it stands: its `serve` line through the live-service helper,
its other commands as one shell script in a fresh folder, each answer shown after `#>` found in
what they print, in order (`…` stands for any text on the line). Only the port changes (8080 may be
taken here), and the folder (`./var` is a fresh one). Always on the embedded SQLite default: the
quick start is what a new user runs with nothing installed but Python."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys

import pytest
from conftest import ROOT
from live_service import LiveService

README = (ROOT / "README.md").read_text()
SECTION = README.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```sh\n(.*?)```", SECTION, re.DOTALL)


def expectations(block: str) -> list[str]:
    return [line[3:] for line in block.splitlines() if line.startswith("#> ")]


def commands(block: str) -> str:
    return "\n".join(line for line in block.splitlines() if not line.startswith("#> "))


def pattern(shown: str) -> re.Pattern:
    return re.compile(".*?".join(re.escape(part) for part in shown.split("…")))


def test_the_readme_shows_a_serve_line_and_an_answer_for_every_function():
    assert len(BLOCKS) >= 2 and BLOCKS[0].strip().endswith("python run.py serve --port 8080")
    script = "\n".join(BLOCKS[1:])
    for function in ("user-management", "stripe-webhook", "email-notifications", "analytics-tracking",
                     "/health", "/dashboard", "run.py token"):
        assert function in script, f"the quick start never calls {function}"
    assert all(expectations(b) for b in BLOCKS[1:]), "a block of the quick start shows no answer"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the quick start uses curl, which is not installed")
async def test_the_readme_quick_start_runs_top_to_bottom(tmp_path):
    words = shlex.split(BLOCKS[0].strip())
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    assert words[len(env):] == ["python", "run.py", "serve", "--port", "8080"]
    home = tmp_path / "work"
    home.mkdir()
    (home / "run.py").symlink_to(ROOT / "run.py")
    (home / "examples").symlink_to(ROOT / "examples")
    service = LiveService({**env, "VIBE_DATA_DIR": str(home / "var")})  # the client's ./var, from its folder
    await service.start()
    try:
        script = "\n".join(commands(b) for b in BLOCKS[1:]).replace("8080", str(service.port))
        client_env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
                      "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        shell = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", script, cwd=home, env=client_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(shell.communicate(), 180)
    finally:
        code, log = await service.stop(signal.SIGINT)  # Ctrl-C
    out = stdout.decode()
    assert shell.returncode == 0, f"the quick start failed:\n{out}\n{stderr.decode()}\n{log}"
    at = 0
    for block in BLOCKS[1:]:
        for shown in expectations(block):
            found = pattern(shown.replace("8080", str(service.port))).search(out, at)
            assert found, f"the README shows {shown!r}; the commands printed, from there on:\n{out[at:]}"
            at = found.end()
    assert (code, "Traceback" in log) == (0, False), log
    assert sorted(p.suffix for p in (home / "var" / "outbox").iterdir()) == [".eml"] * 3
