"""Running a coroutine on uvloop when it is installed, else on asyncio's default loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    runner = asyncio.Runner(loop_factory=loop_factory())
    try:
        result = runner.run(coro)
    except BaseException:
        # A loop that failed to start (uvloop's signal socket pair, out of descriptors) cannot
        # be closed: its close said "already running" and hid why it failed.
        with contextlib.suppress(RuntimeError):
            runner.close()
        if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()  # never started: no "was never awaited" warning after the error
        raise
    runner.close()
    return result
