"""`python run.py report`: a health report from a running service's /health and /metrics.

Error rates per function (5xx share of answers), latency percentiles per function estimated from
the Prometheus histogram buckets, the slowest routes by mean time, and the queues.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = aiohttp.ClientTimeout(total=15)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative (upper bound, count) buckets, as Prometheus does."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            span = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / span if span else 1)
        prev_bound, prev_count = bound, count
    return prev_bound


def analyse(metrics_text: str) -> dict[str, Any]:
    answers: dict[str, dict[str, float]] = defaultdict(lambda: {"requests": 0.0, "errors": 0.0})
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    routes: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0.0, "sum": 0.0})
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "vibe_http_requests_total":
                a = answers[s.labels["function"]]
                a["requests"] += s.value
                a["errors"] += s.value if s.labels["status"].startswith("5") else 0
            elif s.name == "vibe_http_request_duration_seconds_bucket":
                buckets[s.labels["function"]][float(s.labels["le"])] += s.value
            elif s.name in ("vibe_http_request_duration_seconds_count", "vibe_http_request_duration_seconds_sum"):
                routes[s.labels["route"]][s.name.rsplit("_", 1)[1]] += s.value
    functions = {}
    for name, a in sorted(answers.items()):
        b = list(buckets[name].items())
        functions[name] = {"requests": int(a["requests"]), "errors": int(a["errors"]),
                           "error_rate": round(a["errors"] / a["requests"], 4) if a["requests"] else 0.0,
                           **{f"p{int(q * 100)}_ms": (round(v * 1000, 1) if (v := quantile(b, q)) is not None else None)
                              for q in (0.5, 0.95, 0.99)}}
    slowest = sorted(({"route": r, "requests": int(v["count"]), "mean_ms": round(v["sum"] / v["count"] * 1000, 2)}
                      for r, v in routes.items() if v["count"]), key=lambda r: -r["mean_ms"])[:10]
    return {"functions": functions, "slowest_routes": slowest}


async def build(url: str) -> dict[str, Any]:
    base = url.rstrip("/")
    report: dict[str, Any] = {"url": base, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"{base}/health") as resp:
                doc = await resp.json(content_type=None)
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return {**report, "status": "unhealthy", "error": f"unreachable: {exc or type(exc).__name__}"}
    report.update(status=doc.get("status", "unhealthy"), version=doc.get("version"),
                  database=doc.get("database"), function_status={k: v["status"] for k, v in doc.get("functions", {}).items()},
                  queues=doc.get("queues", {}), circuit_breakers=doc.get("circuit_breakers", {}), **analyse(text))
    return report


def markdown(r: dict[str, Any]) -> str:
    lines = ["# vibe health report", "", f"- Service: {r['url']}", f"- Generated: {r['generated_at']}",
             f"- Status: **{r['status']}**"]
    if "error" in r:
        return "\n".join(lines + [f"- Error: {r['error']}"])
    db = r.get("database") or {}
    lines += [f"- Version: {r.get('version')}",
              f"- Database: {db.get('dialect')}, {'reachable' if db.get('reachable') else 'unreachable'}"
              f"{', ' + str(db.get('round_trip_ms')) + ' ms' if db.get('reachable') else ''}", "",
              "## Functions", "", "| function | status | requests | error rate | p50 ms | p95 ms | p99 ms |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in sorted(set(r["function_status"]) | set(r["functions"])):
        f = r["functions"].get(name, {})
        lines.append(f"| {name} | {r['function_status'].get(name, '-')} | {f.get('requests', 0)} | "
                     f"{f.get('error_rate', 0):.2%} | {f.get('p50_ms', '-')} | {f.get('p95_ms', '-')} | {f.get('p99_ms', '-')} |")
    lines += ["", "## Slowest routes", "", "| route | requests | mean ms |", "| --- | ---: | ---: |"]
    lines += [f"| `{s['route']}` | {s['requests']} | {s['mean_ms']} |" for s in r["slowest_routes"]]
    lines += ["", "## Queues", "", "| queue | depth |", "| --- | ---: |"]
    lines += [f"| {q} | {n} |" for q, n in r["queues"].items()]
    lines += ["", "## Circuit breakers", ""]
    lines += [f"- {name}: {b['state']} ({b['failures']} failures)" for name, b in r["circuit_breakers"].items()] or ["- none"]
    return "\n".join(lines)
