"""How long the event loop runs each callback without a break, for the benchmarks (issue 17).

    python bench/webhooks.py --db postgresql --rounds 1 --server-env PYTHONPATH=bench/loop_probe
    cat /tmp/vibe-loop.*.txt

A request waits while the loop runs anything else, so the webhooks' p99 is made of the longest
stretches between two looks at the sockets. With this folder on the service's PYTHONPATH
(Python imports `sitecustomize` at start-up), every callback the loop runs (`Handle._run`: a
task's step, a future's done-callback, a transport's read) is timed; at exit the process writes,
per kind (a task's coroutine and the await its step ended at, else the callback), how many ran, their CPU-free wall time in all,
and how many took over 2, 5 and 10 ms, to $VIBE_LOOP_PROBE_DIR (default /tmp)/vibe-loop.<pid>.txt.
"""

import asyncio.events
import atexit
import collections
import os
import time

_stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0, 0, 0, 0.0])  # n, total, >2, >5, >10, max
_run = asyncio.events.Handle._run
_clock = time.perf_counter


def _label(handle) -> str:
    """A task's coroutine and where its step ended (the innermost await it stopped at), or the
    callback's name."""
    callback = handle._callback
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        label, inner, where = getattr(coro, "__qualname__", repr(coro)), coro, []
        while inner is not None and getattr(inner, "cr_frame", None) is not None:
            code = inner.cr_frame.f_code
            if inner is not coro and ("/vibe/" in code.co_filename or "/plugins/" in code.co_filename):
                where.append(f"{code.co_qualname}:{inner.cr_frame.f_lineno}")
            inner = getattr(inner, "cr_await", None)
        if where:
            label += " -> " + " > ".join(where)
        return label
    return getattr(callback, "__qualname__", repr(callback))


def _timed(self) -> None:
    start = _clock()
    try:
        _run(self)
    finally:
        took = _clock() - start
        if took > 0.0005:  # the short ones are many and tell nothing: count only these
            row = _stats[_label(self)]
            row[0] += 1
            row[1] += took
            row[2] += took > 0.002
            row[3] += took > 0.005
            row[4] += took > 0.010
            row[5] = max(row[5], took)


def _report() -> None:
    path = os.path.join(os.environ.get("VIBE_LOOP_PROBE_DIR", "/tmp"), f"vibe-loop.{os.getpid()}.txt")
    with open(path, "w") as out:
        out.write("callbacks over 0.5 ms, by kind: count, total ms, over 2 / 5 / 10 ms, longest ms\n")
        for label, (n, total, over2, over5, over10, longest) in sorted(_stats.items(), key=lambda kv: -kv[1][1]):
            out.write(f"{n:8} {total * 1000:9.1f} {over2:6} {over5:5} {over10:5} {longest * 1000:8.1f}  {label}\n")


asyncio.events.Handle._run = _timed
atexit.register(_report)
