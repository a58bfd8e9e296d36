"""Issue 18, the first hour of a new user: the papercuts, each through a real entry point (HTTP,
`python run.py`, a real pipe)."""

from __future__ import annotations

import asyncio
import base64
import configparser
import json
import subprocess
import sys

import tokens
from analytics_support import PREFIX, WRITE_KEY
from conftest import ROOT, postgres_only, run_cli

LESSON_PLUGIN = str(ROOT / "examples" / "analytics_plugin")


def url_of(service) -> str:
    return str(service.client.make_url("")).rstrip("/")


async def post(service, path: str, body, headers: dict) -> tuple[int, dict]:
    resp = await service.client.post(path, json=body, headers=headers)
    return resp.status, await resp.json()


# 1. `check` with a name that is no function's


async def test_check_of_an_unknown_function_is_an_error_listing_the_valid_names(service, env):
    code, out, err = await run_cli("check", "nosuch", "--url", url_of(service), env=env)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, (code, out, err)
    assert "'nosuch'" in lines[0] and "valid names: all, " in lines[0]
    for name in ("analytics-tracking", "email-notifications", "stripe-webhook", "user-management"):
        assert name in lines[0]
    # A real name is still checked as before.
    code, out, err = await run_cli("check", "user-management", "--url", url_of(service), env=env)
    assert code in (0, 1) and out.startswith("user-management") and "HTTP 200" in out and err == ""
    # `test` too, before sending a request; `all` is no function to hammer.
    for name in ("nosuch", "all"):
        code, out, err = await run_cli("test", name, "3", "--url", url_of(service), env=env)
        assert (code, out) == (2, "") and f"no function named {name!r}; valid names: analytics-tracking" in err


# 2. A write key when the service has none


async def test_a_write_key_sent_to_a_service_without_one_is_told_none_is_set(start_service):
    service = await start_service()  # no ANALYTICS_WRITE_KEY
    status, body = await post(service, f"{PREFIX}/event", {"event": "x", "user_id": "u"}, {"X-Write-Key": "wk_guess"})
    message = body["error"]["message"]
    assert status == 401 and body["error"]["code"] == "invalid_write_key"
    assert "does not match" not in message and "no ANALYTICS_WRITE_KEY" in message
    assert "Authorization: Bearer" in message and "operator to set ANALYTICS_WRITE_KEY" in message


async def test_the_segment_door_without_a_write_key_says_none_is_set(start_service):
    service = await start_service()  # no ANALYTICS_WRITE_KEY
    resp = await service.client.post("/v1/track", json={"writeKey": "wk_guess", "event": "x", "userId": "u"})
    body = await resp.json()
    assert resp.status == 401 and "no ANALYTICS_WRITE_KEY" in body["error"]["message"]
    configured = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    resp = await configured.client.post("/v1/track", json={"writeKey": "wk_guess", "event": "x", "userId": "u"})
    assert resp.status == 401 and (await resp.json())["error"]["message"] == (
        "Send the write key as the Basic-auth user or as writeKey.")


async def test_a_wrong_write_key_is_still_told_it_does_not_match(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    status, body = await post(service, f"{PREFIX}/event", {"event": "x", "user_id": "u"}, {"X-Write-Key": "wk_guess"})
    assert status == 401 and body["error"]["code"] == "invalid_write_key"
    assert body["error"]["message"] == "The X-Write-Key header does not match ANALYTICS_WRITE_KEY."


# 3. `report` writes into the data folder


async def test_report_is_written_into_the_data_folder_by_default(service, env, tmp_path):
    in_root = {p.name for p in ROOT.glob("vibe-health-report.*")}
    data_dir = tmp_path / "reports-here"
    run_env = {**env, "VIBE_DATA_DIR": str(data_dir)}
    code, out, err = await run_cli("report", "--url", url_of(service), env=run_env)
    written = data_dir / "vibe-health-report.md"
    assert written.is_file() and written.read_text().startswith("#"), (code, out, err)
    assert out.strip().endswith(f"report written to {written.resolve()}")
    code, out, _ = await run_cli("report", "--format", "json", "--url", url_of(service), env=run_env)
    assert json.loads((data_dir / "vibe-health-report.json").read_text())["status"] in out
    assert {p.name for p in ROOT.glob("vibe-health-report.*")} == in_root  # nothing new in the repository
    code, out, _ = await run_cli("report", "--help", env=run_env)
    assert code == 0 and "VIBE_DATA_DIR" in out


# 4. Each validation message names its field once


def assert_named_once(field: str, message: str) -> None:
    assert message.count(field) == 1, (field, message)


async def test_analytics_endpoints_name_a_bad_field_once(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY, VIBE_PLUGINS_DIRS=LESSON_PLUGIN)
    server = {"X-Write-Key": WRITE_KEY}
    cases = [
        ("lesson-feedback", {"properties": {"lesson_id": "l-1", "rating": 9}}, "properties.rating",
         "properties.rating must be between 1 and 5"),
        ("workshop-completion", {"properties": {"workshop_id": "w", "score": 500}}, "properties.score",
         "properties.score must be between 0 and 100"),
        ("user-behavior", {"properties": {"action": 5}}, "properties.action",
         "properties.action must be a string"),
        ("event", {"event": "x", "timestamp": "nope"}, "timestamp", "timestamp is not an ISO 8601 time: 'nope'"),
    ]
    for endpoint, body, field, message in cases:
        status, answer = await post(service, f"{PREFIX}/{endpoint}", {"user_id": "u", **body}, server)
        error = answer["error"]
        assert status == 400 and error["code"] == "invalid_event", answer
        assert error["message"] == message and error["details"]["field"] == field
        assert_named_once(field, error["details"]["message"])
    # In a batch each rejected event's message names its field once too.
    batch = {"batch": [{"user_id": "u", "properties": {"lesson_id": "l-1", "rating": 0}},
                       {"user_id": "u", "properties": {"lesson_id": "l-1", "rating": 4}}]}
    status, answer = await post(service, f"{PREFIX}/lesson-feedback", batch, server)
    rejected = answer["results"][0]
    assert status == 200 and rejected["status"] == "rejected" and rejected["field"] == "properties.rating"
    assert_named_once("properties.rating", rejected["message"])


async def test_segment_rejections_name_a_bad_field_once(start_service):
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    basic = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    body = {"batch": [{"type": "track", "userId": "u", "event": "x", "timestamp": "bad"}, {"type": "nope"},
                      {"type": "track", "userId": "u", "event": "x", "properties": {"a": 1}, "context": 5}]}
    status, answer = await post(service, "/v1/batch", body, basic)
    assert status == 200 and [r["field"] for r in answer["rejected"]] == ["timestamp", "type", "context"]
    for rejected in answer["rejected"]:
        assert_named_once(rejected["field"], rejected["message"])


async def test_user_actions_name_each_bad_field_once(service):
    token = tokens.auth(tokens.user_token())
    status, answer = await post(service, "/functions/v1/user-management",
                                {"action": "create_profile", "data": {"display_name": 5, "shoe_size": 42}}, token)
    error = answer["error"]
    assert status == 400 and error["code"] == "invalid_data"
    assert error["message"] == ("Invalid request data: data.shoe_size is not a known field; "
                                "data.display_name must be a string.")
    # The structured list keeps the field and the problem apart, as docs/users.md shows it.
    assert error["details"]["errors"] == [{"field": "data.shoe_size", "message": "is not a known field"},
                                          {"field": "data.display_name", "message": "must be a string"}]
    # A field found wrong after the shape check (against the database) reads the same way.
    status, answer = await post(service, "/functions/v1/user-management",
                                {"action": "create_profile", "data": {"referral_code": "VIBENOPE"}}, token)
    assert status == 400 and answer["error"]["message"] == "Invalid request data: data.referral_code matches no referrer."


async def test_email_bodies_and_data_name_each_bad_field_once(service):
    token = tokens.auth(tokens.service_token())
    status, answer = await post(service, "/functions/v1/email-notifications",
                                {"user_id": 5, "type": "welcome"}, token)
    assert status == 400 and answer["error"]["details"] == ["user_id: must be a string"]
    # a key welcome does not declare is free-form (issue 13); one it declares, of the wrong kind, is named once
    status, answer = await post(service, "/functions/v1/email-notifications",
                                {"user_id": "u", "type": "welcome", "data": {"colour": "red", "start_path": 5}}, token)
    assert status == 400 and answer["error"]["code"] == "invalid_email_data"
    problems = answer["error"]["details"]
    assert len(problems) == 1 and problems[0].startswith("data.start_path: expected a string")
    assert_named_once("data.start_path", problems[0])


# 5. A reader that goes away early


def run_into_a_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python run.py ARGS | head -0`: stdout is a real pipe whose reader closes before the
    command writes a byte, so every write it makes fails with EPIPE."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=str(ROOT),
                            env={"PATH": "/usr/bin:/bin", **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, None, err.decode())


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "warning"}
    # check-config --table writes ~9 KB: the pipe breaks while the command is still printing.
    table = subprocess.run([sys.executable, str(ROOT / "run.py"), "check-config", "--table"], cwd=str(ROOT),
                           env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=60, check=False)
    assert table.returncode == 0 and len(table.stdout) > 8192  # more than one buffer's worth
    for args in (("check-config", "--table"), ("dashboard", "--json", "--url", "http://127.0.0.1:9")):
        result = run_into_a_closed_pipe(*args, env=env)
        assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
        assert result.stderr == "" and result.returncode == 141, (args, result)


async def test_head_1_after_a_command_with_plenty_of_output(start_service, env):
    """The shell's own pipeline, `analytics export USER | head -1`, with ~1.2 MB to write: far more
    than a pipe holds, so the command is still writing when head leaves."""
    service = await start_service(ANALYTICS_WRITE_KEY=WRITE_KEY)
    for batch in range(3):
        events = [{"event": "note", "user_id": "piped", "message_id": f"p-{batch}-{i}",
                   "properties": {"text": "x" * 4000}} for i in range(100)]
        status, answer = await post(service, f"{PREFIX}/event", {"batch": events}, {"X-Write-Key": WRITE_KEY})
        assert status == 200 and answer["accepted"] == 100, answer
    command = f"'{sys.executable}' run.py analytics export piped | head -1; echo \"exit ${{PIPESTATUS[0]}}\" >&2"
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, cwd=str(ROOT), env={"PATH": "/usr/bin:/bin", **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    lines = out.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["user_id"] == "piped"
    assert err.decode().splitlines() == ["exit 141"], err.decode()  # no traceback, and SIGPIPE's status


# 6. Skip reasons are shown


def test_pytest_shows_skip_reasons_and_postgres_only_says_why():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "-rs" in config["tool:pytest"]["addopts"].split()
    reason = postgres_only.kwargs["reason"]
    assert "PostgreSQL" in reason and "DATABASE_URL" in reason
