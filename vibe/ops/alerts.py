"""The alert watchdog: posts to ALERT_WEBHOOK when a threshold is crossed, and once when it clears.

Every ALERT_CHECK_SECONDS it reads the health document and this process's request window and
evaluates the conditions below. A condition that starts is posted as `firing`, one that ends as
`resolved`, each once. A condition that fires again within ALERT_COOLDOWN_SECONDS of its last
notification is kept quiet (and so is its clearing): a flapping check cannot flood the channel.

The body is JSON with a Slack-compatible `text`, plus `alert`, `state`, `service` and `details`
for other receivers. A failing or slow target is logged and forgotten: the watchdog keeps its
own state and never lets a delivery error reach the service.

Conditions (keys): `database` unreachable; `function:<name>` unhealthy; `latency` p95 over
ALERT_P95_SECONDS; `failing:<name>` a function degraded by work that keeps failing (its probe's
`failing` says why: the Stripe dispatcher's failed batches or its oldest due event, see
vibe/billing/service.py); `errors` error rate over ALERT_ERROR_RATE (both over ALERT_WINDOW_SECONDS, and
only with ALERT_MIN_REQUESTS requests or more); `dead_letters:<queue>` a dead-letter queue grown
beyond what it held when the watchdog started (or last cleared).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

import aiohttp
from aiohttp import web

from vibe.config import Settings
from vibe.keys import HTTP_SESSION, SETTINGS, SHUTDOWN
from vibe.ops import health
from vibe.ops.keys import METRICS, WATCHDOG

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, app: web.Application, settings: Settings):
        self.app = app
        self.settings = settings
        self.active: dict[str, bool] = {}  # key -> was its firing announced (False: quiet, cooldown)
        self.last_sent: dict[str, float] = {}
        self.baselines: dict[str, int] = {}
        self.sent = 0
        self.failures = 0
        self.checks = 0
        self.stopping = False

    def conditions(self, doc: dict[str, Any], window: dict[str, Any]) -> dict[str, str]:
        s = self.settings
        found: dict[str, str] = {}
        if not doc["database"]["reachable"]:  # the cause: the functions' failures follow from it
            found["database"] = f"The database is unreachable: {doc['database'].get('error', '')}"
            return found
        for name, result in doc["functions"].items():
            if result["status"] == "unhealthy":
                found[f"function:{name}"] = f"Function {name} is unavailable: {result.get('error', 'unhealthy')}"
            elif result.get("failing"):  # degraded by work that keeps failing or stays undone
                found[f"failing:{name}"] = f"Function {name} is failing: {result['failing']}"
        if window["requests"] >= s.ops.alert_min_requests:
            if window["p95"] is not None and window["p95"] > s.ops.alert_p95_seconds:
                found["latency"] = f"p95 latency is {window['p95']:.2f} s (threshold {s.ops.alert_p95_seconds:g} s)"
            if window["error_rate"] > s.ops.alert_error_rate:
                found["errors"] = (f"Error rate is {window['error_rate']:.1%} of {window['requests']} requests "
                                   f"(threshold {s.ops.alert_error_rate:.1%})")
        for queue, depth in doc["queues"].items():
            if not queue.endswith("_dead"):
                continue
            key = f"dead_letters:{queue}"
            base = self.baselines.setdefault(key, depth)
            if depth > base:
                found[key] = f"Dead-letter queue {queue} grew from {base} to {depth}"
            elif key not in self.active:
                self.baselines[key] = depth  # purged or replayed: the new floor
        return found

    async def check_once(self) -> None:
        self.checks += 1
        doc = await health.snapshot(self.app)
        window = self.app[METRICS].window.summary(self.settings.ops.alert_window_seconds)
        found = self.conditions(doc, window)
        now = time.monotonic()
        for key, message in found.items():
            if key in self.active:
                continue
            loud = now - self.last_sent.get(key, -1e18) >= self.settings.ops.alert_cooldown_seconds
            self.active[key] = loud
            if loud:
                self.last_sent[key] = now
                await self.post(key, "firing", message, doc)
        for key in [k for k in self.active if k not in found]:
            if self.active.pop(key):
                self.last_sent[key] = now
                await self.post(key, "resolved", f"Resolved: {key}", doc)

    async def post(self, key: str, state: str, message: str, doc: dict[str, Any]) -> None:
        icon = ":rotating_light:" if state == "firing" else ":white_check_mark:"
        body = {"text": f"{icon} vibe {state}: {message}", "alert": key, "state": state, "service": "vibe",
                "details": {"status": doc["status"], "version": doc["version"]}}
        try:
            async with self.app[HTTP_SESSION].post(
                self.settings.ops.alert_webhook, json=body,
                timeout=aiohttp.ClientTimeout(total=self.settings.ops.alert_timeout_seconds),
            ) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"answered HTTP {resp.status}")
            self.sent += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as exc:
            self.failures += 1
            log.warning("alert %s (%s) not delivered to ALERT_WEBHOOK: %s", key, state, exc or type(exc).__name__)

    async def run(self) -> None:
        # The flag as well as the cancel: on Python 3.11 asyncio.wait_for (inside the pool's
        # acquire, say) can swallow a cancellation that lands as its inner future completes, and
        # a loop that relied on the cancel alone then ran on and held shutdown for ever (seen:
        # a test's teardown hung until pytest-timeout).
        while not self.stopping:
            try:
                await self.check_once()
            except Exception:  # the watchdog must outlive any surprise; it is logged each time
                log.exception("alert check failed")
            await asyncio.sleep(self.settings.ops.alert_check_seconds)


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    watchdog = app[WATCHDOG] = Watchdog(app, settings)
    task = asyncio.create_task(watchdog.run(), name="alert-watchdog") if settings.ops.alert_webhook else None
    try:
        yield
    finally:
        watchdog.stopping = True
        if task is not None:
            task.cancel()  # its sleep or its check: it ends now, or at the deadline
            await app[SHUTDOWN].stop("alert watchdog", [task])
