"""Waiting helpers shared by the test modules: one way to say "this becomes true soon".

Prefer awaiting an event the code under test offers (``PluginHost.wait_for_generation``,
``FilesystemLoaderController.synced``); poll with these only where there is none (a
subprocess's log, a bus's attached values).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
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


class Daemon:
    """``cbus daemon`` in a subprocess, logging to a file in ``cwd``.

    ``env`` is added to this process's environment; ``within`` is the default wait of
    :meth:`wait_for`.
    """

    def __init__(
        self, cwd: Path, *args: str, env: Mapping[str, str] | None = None, within: float = 30
    ) -> None:
        self.within = within
        self.log = cwd / f"daemon-{len(list(cwd.glob('daemon-*.log')))}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controllerbus.cli", "daemon", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, *, after: int = 0, within: float | None = None) -> str:
        """Wait until ``text`` is logged after offset ``after``; return the whole log."""
        return eventually_sync(
            lambda: content if text in (content := self.text())[after:] else "",
            within=self.within if within is None else within,
            give_up=lambda: self.proc.poll() is not None,
            failure=lambda: f"{text!r} not logged; got:\n{self.text()}",
        )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
