"""Waiting helpers shared by the test modules: one way to say "this becomes true soon".

Prefer awaiting an event the code under test offers (``PluginHost.wait_for_generation``,
``FilesystemLoaderController.synced``); poll with these only where there is none (a
subprocess's log, a bus's attached values).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["eventually", "eventually_sync"]

T = TypeVar("T")


async def eventually(
    pred: Callable[[], object],
    *,
    within: float = 5.0,
    step: float = 0.005,
    failure: Callable[[], str] = lambda: "condition not reached",
) -> Any:
    """Poll ``pred`` on the event loop until it returns something true; return that.

    ``pred`` may be a coroutine function: its result is awaited.

    Raises:
        AssertionError: with ``failure()`` as its message, after ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        result = pred()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{failure()} (within {within}s)")
        await asyncio.sleep(step)


def eventually_sync(
    pred: Callable[[], T],
    *,
    within: float = 20.0,
    step: float = 0.05,
    give_up: Callable[[], bool] = lambda: False,
    failure: Callable[[], str] = lambda: "condition not reached",
) -> T:
    """Poll ``pred`` (blocking) until it returns something true; return that.

    ``give_up`` ends the wait early (a subprocess that exited will log nothing more).

    Raises:
        AssertionError: with ``failure()`` as its message, on timeout or giving up.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := pred():
            return result
        if give_up():
            break
        time.sleep(step)
    raise AssertionError(failure())
