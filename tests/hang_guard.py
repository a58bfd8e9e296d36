"""When pytest-timeout fires, say where the event loop was waiting: every asyncio task's stack.

pytest-timeout's own dump shows threads only, and a hung asyncio test's main thread is always
in `selector.poll`, which says nothing. This wraps its SIGALRM handler: the failure it raises
also lists every task of the running loop with its whole await chain (vibe.shutdown.describe).
"""

from __future__ import annotations

import signal

import pytest

from vibe.web.shutdown import describe_all


@pytest.hookimpl(wrapper=True)
def pytest_timeout_set_timer(item, settings):
    result = yield
    previous = signal.getsignal(signal.SIGALRM)
    if settings.method != "signal" or not callable(previous):
        return result

    def dump_then_fail(signum, frame):
        __tracebackhide__ = True
        tasks = describe_all()
        try:
            previous(signum, frame)  # pytest-timeout: the threads' stacks, then pytest.fail
        except pytest.fail.Exception as failure:
            failure.msg = f"{failure.msg}\n\nasyncio tasks at the timeout:\n{tasks}"
            raise

    signal.signal(signal.SIGALRM, dump_then_fail)
    return result
