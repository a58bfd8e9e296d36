"""`GET /metrics` in the Prometheus text format, from one `CollectorRegistry` per application.

What is counted as it happens (requests, latency) lives in prometheus_client counters and
histograms; what is a state (queues, caches, pool, breakers, loop lag, stored Stripe events and
emails) is read when Prometheus scrapes: the handler refreshes a snapshot from the database,
then a custom collector reports it with the in-memory figures.

`RequestWindow` keeps the last hour per minute (requests, server errors, a latency sample) for
the dashboard and the alert watchdog; it is this process's view (each worker has its own).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from vibe.db.database import DatabaseUnavailable
from vibe.keys import DB
from vibe.ops import health
from vibe.ops.keys import METRICS
from vibe.web.keys import GEO, LOAD_MONITOR, RATE_LIMITER

FUNCTIONS_PREFIX = "/functions/v1/"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAMPLE_PER_MINUTE = 2000
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def route_of(request: web.Request) -> tuple[str, str]:
    """(function, route template) with bounded cardinality: unknown paths are `unmatched`."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched", "unmatched"
    path = resource.canonical
    if path.startswith(FUNCTIONS_PREFIX):
        name = path[len(FUNCTIONS_PREFIX):].split("/", 1)[0]
        return ("system" if name == "{function}" else name), path
    return "system", path


class RequestWindow:
    """Per-minute request counts, server errors and a latency sample, for the last hour."""

    def __init__(self, minutes: int = 60):
        self.minutes = minutes
        self.buckets: collections.OrderedDict[int, list] = collections.OrderedDict()

    def add(self, status: int, seconds: float, now: float | None = None) -> None:
        minute = int((now or time.time()) // 60)
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = [0, 0, []]
            while len(self.buckets) > self.minutes:
                self.buckets.popitem(last=False)
        bucket[0] += 1
        bucket[1] += status >= 500
        if len(bucket[2]) < SAMPLE_PER_MINUTE:
            bucket[2].append(seconds)

    def series(self, now: float | None = None) -> list[dict[str, Any]]:
        """One entry per minute of the last hour, oldest first (empty minutes included)."""
        last = int((now or time.time()) // 60)
        out = []
        for minute in range(last - self.minutes + 1, last + 1):
            count, errors, _ = self.buckets.get(minute, (0, 0, ()))
            out.append({"minute": minute * 60, "requests": count, "errors": errors})
        return out

    def summary(self, seconds: float, now: float | None = None) -> dict[str, Any]:
        """Requests, error rate and latency percentiles over the last `seconds`."""
        since = int(((now or time.time()) - seconds) // 60)
        count = errors = 0
        sample: list[float] = []
        for minute, (c, e, lat) in self.buckets.items():
            if minute >= since:
                count, errors = count + c, errors + e
                sample.extend(lat)
        sample.sort()

        def pct(p: float) -> float | None:
            return round(sample[min(len(sample) - 1, int(p * len(sample)))], 4) if sample else None

        return {"requests": count, "errors": errors, "error_rate": round(errors / count, 4) if count else 0.0,
                "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vibe_http_requests", "HTTP requests answered",
                                ["function", "method", "status"], registry=self.registry)
        self.latency = Histogram("vibe_http_request_duration_seconds", "Time to answer a request",
                                 ["function", "route"], buckets=BUCKETS, registry=self.registry)
        self.window = RequestWindow()
        self.state: dict[str, Any] = {}  # refreshed from the database at each scrape
        # (resource, method, status) -> the labelled counter and histogram: `labels()` checks and
        # locks every time; the keys are bounded like the labels (routes, methods, statuses)
        self._children: dict[tuple, tuple[Any, Any]] = {}

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        key = (request.match_info.route.resource, request.method, status)
        children = self._children.get(key)
        if children is None:
            function, route = route_of(request)
            children = self._children[key] = (self.requests.labels(function, request.method, str(status)),
                                              self.latency.labels(function, route))
        children[0].inc()
        children[1].observe(seconds)
        self.window.add(status, seconds)


@web.middleware
async def metrics_middleware(request: web.Request, handler):
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's code): not a server error
        raise
    finally:
        request.app[METRICS].observe(request, status, time.perf_counter() - start)


async def refresh(app: web.Application) -> dict[str, Any]:
    """Read the states that live in the database (and the health document) for one scrape."""
    doc = await health.snapshot(app)
    state: dict[str, Any] = {"health": doc, "stripe": [], "emails": []}
    if doc["database"]["reachable"]:
        try:
            state["stripe"] = await app[DB].fetchall(
                "SELECT type, status, COUNT(*) AS n FROM stripe_events GROUP BY type, status")
            state["emails"] = await email_counts(app)
        except DatabaseUnavailable:
            pass
    app[METRICS].state = state
    return state


async def email_counts(app: web.Application) -> list[dict[str, Any]]:
    return await app[DB].fetchall("SELECT status, COUNT(*) AS n FROM email_messages GROUP BY status")


class StateCollector(Collector):
    """What the app holds right now, read at scrape time (no copies kept between scrapes)."""

    def __init__(self, app: web.Application):
        self.app = app

    def collect(self) -> Iterator:
        app, state = self.app, self.app[METRICS].state
        doc = state.get("health", {})
        g = GaugeMetricFamily("vibe_up", "1 healthy, 0.5 degraded, 0 unhealthy", labels=["function"])
        score = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}
        g.add_metric(["all"], score.get(doc.get("status"), 0.0))
        for name, result in doc.get("functions", {}).items():
            g.add_metric([name], score[result["status"]])
        yield g
        g = GaugeMetricFamily("vibe_function_failing", "1 while a function's probe says its work keeps failing "
                              "(the Stripe dispatcher: STRIPE_FAILING_BATCHES, STRIPE_DUE_AGE_SECONDS)",
                              labels=["function"])
        for name, result in doc.get("functions", {}).items():
            g.add_metric([name], 1.0 if result.get("failing") else 0.0)
        yield g
        g = GaugeMetricFamily("vibe_database_reachable", "1 when the database answered the last ping")
        g.add_metric([], 1.0 if doc.get("database", {}).get("reachable") else 0.0)
        yield g
        g = GaugeMetricFamily("vibe_database_round_trip_seconds", "Round trip of the last ping")
        g.add_metric([], (doc.get("database", {}).get("round_trip_ms") or 0.0) / 1000)
        yield g
        g = GaugeMetricFamily("vibe_queue_depth", "Work waiting, by queue", labels=["queue"])
        for queue, depth in doc.get("queues", {}).items():
            g.add_metric([queue], depth)
        yield g
        g = GaugeMetricFamily("vibe_stripe_events", "Stored Stripe events by type and outcome",
                              labels=["type", "status"])
        for row in state.get("stripe", []):
            g.add_metric([row["type"], row["status"]], int(row["n"]))
        yield g
        g = GaugeMetricFamily("vibe_emails", "Emails in the outbox by status", labels=["status"])
        for row in state.get("emails", []):
            g.add_metric([row["status"]], int(row["n"]))
        yield g
        pool = app[DB].pool_state()
        g = GaugeMetricFamily("vibe_db_pool", "Database pool connections", labels=["state"])
        for key in ("size", "in_use", "waiting"):
            g.add_metric([key], pool.get(key, 0))
        yield g
        monitor = app.get(LOAD_MONITOR)
        g = GaugeMetricFamily("vibe_event_loop_lag_seconds", "Smoothed event-loop lag")
        g.add_metric([], monitor.lag if monitor is not None else 0.0)
        yield g
        yield from self.caches()
        limiter = app.get(RATE_LIMITER)
        c = CounterMetricFamily("vibe_rate_limit_rejections", "Requests refused by the rate limiter",
                                labels=["tier"])
        for tier, n in (limiter.rejections.items() if limiter is not None else ()):
            c.add_metric([tier], n)
        yield c
        geo = app.get(GEO)
        c = CounterMetricFamily("vibe_geo_refused_requests", "Requests answered 451 by the geographic rules",
                                labels=["country", "rule"])
        for (country, rule), n in (geo.refused.items() if geo is not None else ()):
            c.add_metric([country, rule], n)
        yield c
        g = GaugeMetricFamily("vibe_circuit_breaker_state", "0 closed, 1 half-open, 2 open", labels=["breaker"])
        opened = CounterMetricFamily("vibe_circuit_breaker_openings", "Times a breaker opened", labels=["breaker"])
        for name, b in health.breaker_states(app).items():
            g.add_metric([name], BREAKER_STATES.get(b["state"], 0))
            opened.add_metric([name], b["opened"])
        yield g
        yield opened

    def caches(self) -> Iterator:
        families = {k: CounterMetricFamily(f"vibe_cache_{k}", f"Cache {k}", labels=["cache"])
                    for k in ("hits", "misses", "evictions")}
        for name, s in health.cache_ratios(self.app).items():
            for key, family in families.items():
                family.add_metric([name], s[key])
        yield from families.values()


async def metrics(request: web.Request) -> web.Response:
    await refresh(request.app)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app[METRICS].registry.register(StateCollector(app))
    # Outside the rate limiter and the error layer, so 429s and 500s are counted as answered.
    app.middlewares.insert(1, metrics_middleware)
    app.router.add_get("/metrics", metrics)
