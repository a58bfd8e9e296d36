"""The garbage collector's pauses in a process, for the benchmarks (docs/webhooks.md, issue 17).

    python bench/webhooks.py --db postgresql --rounds 1 --server-env PYTHONPATH=bench/gc_probe
    cat /tmp/vibe-gc.*.txt

Python imports `sitecustomize` at start-up from the path, so with this folder on the service's
PYTHONPATH every collection is timed (`gc.callbacks`); at exit the process writes, per
generation, how many collections ran, their total and longest pause, and when each full one
ran, to $VIBE_GC_PROBE_DIR (default /tmp)/vibe-gc.<pid>.txt.
"""

import atexit
import collections
import gc
import os
import time

_started: list[float] = []
_pauses: dict[int, list[float]] = collections.defaultdict(list)
_full: list[tuple[float, float]] = []  # (wall-clock time, pause) of each generation-2 collection


def _time(phase: str, info: dict) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        pause = time.perf_counter() - _started[0]
        _pauses[info["generation"]].append(pause)
        if info["generation"] == 2:
            _full.append((time.time(), pause))


def _report() -> None:
    path = os.path.join(os.environ.get("VIBE_GC_PROBE_DIR", "/tmp"), f"vibe-gc.{os.getpid()}.txt")
    with open(path, "w") as out:
        for generation, pauses in sorted(_pauses.items()):
            out.write(f"gen{generation}: {len(pauses)} collections, {sum(pauses) * 1000:.1f} ms in all, "
                      f"longest {max(pauses) * 1000:.2f} ms\n")
        for at, pause in _full:
            out.write(f"full collection at {time.strftime('%H:%M:%S', time.gmtime(at))} UTC: {pause * 1000:.1f} ms\n")


gc.callbacks.append(_time)
atexit.register(_report)
