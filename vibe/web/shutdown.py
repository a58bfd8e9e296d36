"""Bounded shutdown: one deadline for all of an app's background work to stop.

Each `cleanup_ctx` resource stops its loops through `app[SHUTDOWN]`. The clock starts at the
first resource that stops (after aiohttp has let in-flight requests finish within
`--shutdown-timeout`) and runs SHUTDOWN_GRACE_SECONDS for all of them together. What is still
running at the deadline is logged with its whole await chain, then cancelled (a step that
begins past the deadline still has FLOOR seconds); a task that does not end even then (a cancellation swallowed, as Python 3.11's `asyncio.wait_for` can) is logged
again and left behind, so that shutdown always finishes.

Nothing acknowledged is lost by cutting work short: every write is a transaction (committed or
rolled back), and work claimed and not finished (a Stripe event, a mail) is claimable again
when its lease runs out.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import time
from typing import Any, Coroutine, Iterable

log = logging.getLogger(__name__)

# How long a cancelled task is given to unwind (its `finally` blocks) past the deadline.
CANCEL_WAIT = 1.0
# A step that begins past the deadline still has this long to finish on its own.
FLOOR = 0.1


def await_chain(task: asyncio.Task) -> list[Any]:
    """The frames a task is suspended in, outermost first, and what the innermost one awaits.

    `Task.get_stack()` gives only the outermost coroutine's frame (a suspended coroutine's frame
    has no `f_back`), so this follows `cr_await` through coroutines, generators and async
    generators (whose `asend` wrapper names its generator only to the garbage collector)."""
    chain: list[Any] = []
    awaited: Any = task.get_coro()
    for _ in range(200):
        if awaited is None:
            break
        if type(awaited).__name__ in ("async_generator_asend", "async_generator_athrow"):
            awaited = next((r for r in gc.get_referents(awaited) if inspect.isasyncgen(r)), awaited)
        frame = next((getattr(awaited, a) for a in ("cr_frame", "gi_frame", "ag_frame")
                      if getattr(awaited, a, None) is not None), None)
        if frame is None:
            chain.append(awaited)  # a future, or something the chain cannot be followed into
            break
        chain.append(frame)
        awaited = next((getattr(awaited, a) for a in ("cr_await", "gi_yieldfrom", "ag_await")
                        if getattr(awaited, a, None) is not None), None)
    return chain or list(task.get_stack())


def describe(task: asyncio.Task) -> str:
    """A task's name and where it waits, one line per frame, as a traceback reads."""
    lines = [f"task {task.get_name()!r} ({task.get_coro()!r}):"]
    for item in await_chain(task):
        if inspect.isframe(item):
            lines.append(f'  File "{item.f_code.co_filename}", line {item.f_lineno}, in {item.f_code.co_name}')
        else:
            lines.append(f"  waiting on {item!r}")
    return "\n".join(lines)


def describe_all(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every unfinished task of `loop` (the running one by default), described."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return "no running event loop"
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    return "\n".join(describe(t) for t in tasks) or "no unfinished tasks"


class Shutdown:
    """The deadline an app's resources share while they stop."""

    def __init__(self, grace: float):
        self.grace = grace
        self.deadline: float | None = None

    def remaining(self) -> float:
        """Seconds left; the first call starts the clock."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace
        return max(0.0, self.deadline - time.monotonic())

    async def stop(self, what: str, tasks: Iterable[asyncio.Task | None]) -> bool:
        """Wait for `tasks` (already told to stop) until the deadline; cancel what is left.

        True when all ended on their own. `what` names the resource in the log."""
        pending = {t for t in tasks if t is not None and not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(FLOOR, self.remaining()))
        if not pending:
            return True
        log.error("shutdown: %s still running after SHUTDOWN_GRACE_SECONDS=%g; cancelling:\n%s",
                  what, self.grace, "\n".join(describe(t) for t in pending))
        for task in pending:
            task.cancel()
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT)
        if stuck:
            log.error("shutdown: %s did not end when cancelled; left behind:\n%s",
                      what, "\n".join(describe(t) for t in stuck))
        return False

    async def wait(self, what: str, awaitable: Coroutine[Any, Any, Any]) -> bool:
        """Run one closing step (a committer's drain, a pool's close) within the deadline."""
        task = asyncio.create_task(awaitable, name=f"shutdown: {what}")
        ended = await self.stop(what, [task])
        if ended:
            task.result()  # its error, if any, is the resource's to report
        return ended


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, or less if `event` is set; True if it was. The background loops'
    pause: `asyncio.timeout`, not `asyncio.wait_for`, which on Python 3.11 can swallow the
    cancel that shutdown sends (its wait runs in a task of its own)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False
