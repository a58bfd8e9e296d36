"""schemathesis against a live `python run.py serve`, on the database under test: zero 5xx.

`.ci/run` already fuzzes every operation of /openapi.json on SQLite with 50 examples each; this
runs the same CLI from the test suite, so PostgreSQL gets it too (25 examples per operation, to
stay bounded: well under a minute).
"""

import asyncio
import shutil
import sys

import pytest
import tokens
from analytics_support import WRITE_KEY
from live_service import LiveService

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("schemathesis") is None, reason="schemathesis is in the test extra")
async def test_schemathesis_finds_no_server_error(env, tmp_path):
    # Configured as in .ci/run: without EMAIL_WEBHOOK_SECRET the delivery-event endpoint answers a
    # deliberate 503 `webhook_not_configured`.
    server = await LiveService({**env, "ANALYTICS_WRITE_KEY": WRITE_KEY, "DASHBOARD_PASSWORD": "fuzz-dashboard",
                                "RATE_LIMIT_ANONYMOUS": "1000000", "RATE_LIMITS": "admin=1000000",
                                "EMAIL_WEBHOOK_SECRET": "whsec_Y2ktZnV6ei1lbWFpbC13ZWJob29rLXNlY3JldCEh"},
                               "--shutdown-timeout", "5").start()
    try:
        proc = await asyncio.create_subprocess_exec(
            shutil.which("schemathesis"), "run", f"{server.url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "25", "--workers", "1", "--seed", "7",
            "-H", f"Authorization: Bearer {tokens.admin_token('fuzz-admin')}",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        await server.stop()
    report = out.decode(errors="replace")
    sys.stdout.write(report[-3000:])
    assert proc.returncode == 0, report[-6000:]
