"""The daemon process's life: run until SIGINT/SIGTERM, then end within a grace period.

:func:`run_daemon_process` is what ``cbus daemon`` runs. The first SIGINT or SIGTERM
starts an orderly shutdown (plugins unloaded, controllers stopped) and a watchdog:

* everything stopped → exit status :data:`EXIT_OK` (0);
* plugins left non-daemon threads running (they would keep the interpreter alive
  forever) → they are named in the log and abandoned: :data:`EXIT_ABANDONED_THREADS`;
* the shutdown did not finish within the grace period (or a second signal came) →
  what was still running is logged and the process exits:
  :data:`EXIT_SHUTDOWN_TIMEOUT`.

The signal handler is a plain ``signal.signal`` handler, not the event loop's: it
runs even while plugin code blocks the loop (Python checks for signals between
bytecodes and interrupts ``time.sleep``), and the watchdog is a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from types import FrameType
from typing import Any

from controllerbus.bus.bus import Bus
from controllerbus.bus.protocols import Factory
from controllerbus.daemon import DaemonOptions, DaemonSession, daemon_session

__all__ = [
    "DEFAULT_GRACE",
    "EXIT_ABANDONED_THREADS",
    "EXIT_OK",
    "EXIT_SHUTDOWN_TIMEOUT",
    "run_daemon_process",
]

logger = logging.getLogger("controllerbus.daemon")

DEFAULT_GRACE = 10.0
"""Seconds from SIGTERM to the end of the process, at most."""
EXIT_OK = 0
EXIT_ABANDONED_THREADS = 3
EXIT_SHUTDOWN_TIMEOUT = 4

SessionHook = Callable[[DaemonSession], Coroutine[Any, Any, None]]


class _Shutdown:
    """The signal handler's state: the stop event, the deadline and the watchdog."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.deadline: float | None = None
        self.done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self._loop, self._stop = loop, stop

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.deadline is not None:
            _exit_now(f"second {name} during shutdown; exiting at once", EXIT_SHUTDOWN_TIMEOUT)
        self.deadline = time.monotonic() + self.grace
        logger.info("%s: shutting down (at most %g s)", name, self.grace)
        threading.Thread(target=self._watchdog, name="shutdown watchdog", daemon=True).start()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                self._loop.call_soon_threadsafe(self._stop.set)

    def _watchdog(self) -> None:
        if self.done.wait(self.grace):
            return
        still = ", ".join(sorted(t.name for t in _other_threads())) or "none"
        _exit_now(
            f"the shutdown did not finish within {self.grace:g} s (threads still running: "
            f"{still}); exiting anyway",
            EXIT_SHUTDOWN_TIMEOUT,
        )

    def remaining(self) -> float:
        if self.deadline is None:
            return self.grace
        return max(0.0, self.deadline - time.monotonic())


def _other_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.current_thread()
        and t is not threading.main_thread()
        and t.name != "shutdown watchdog"
        and t.is_alive()
    ]


def _exit_now(message: str, code: int) -> None:
    logger.error("%s (exit status %d)", message, code)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


async def _serve(
    options: DaemonOptions,
    shutdown: _Shutdown,
    hook: SessionHook | None,
    factories: Iterable[Factory | Callable[[Bus], Factory]],
) -> None:
    stop = asyncio.Event()
    shutdown.attach(asyncio.get_running_loop(), stop)
    async with daemon_session(options, factories=factories) as session:
        extra: asyncio.Task[None] | None = None
        if hook is not None:
            extra = asyncio.create_task(hook(session))
        try:
            await stop.wait()
        finally:
            if extra is not None:
                extra.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await extra


def run_daemon_process(
    options: DaemonOptions,
    *,
    grace: float = DEFAULT_GRACE,
    hook: SessionHook | None = None,
    factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
) -> int:
    """Run the daemon until a signal; return its exit status (or exit the process).

    Args:
        options: what the daemon runs.
        grace: seconds from the first signal to the end of the process.
        hook: a coroutine run alongside the session, cancelled at shutdown (tests use
            it to ask the daemon's bus questions).
        factories: static factories for the daemon's bus (``cbus daemon``: boilerplate).

    Raises:
        ControllerBusError: the daemon could not start (config, state dir, ...).
    """
    shutdown = _Shutdown(grace)
    previous = {sig: signal.signal(sig, shutdown.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(_serve(options, shutdown, hook, factories))
        leaked = [t for t in _other_threads() if not t.daemon]
        for thread in leaked:
            thread.join(timeout=min(shutdown.remaining(), 1.0))
        leaked = [t for t in leaked if t.is_alive()]
        if leaked:
            names = ", ".join(repr(t.name) for t in leaked)
            _exit_now(
                f"abandoning {len(leaked)} non-daemon thread(s) that plugins left running: "
                f"{names} (see the leaks in the manifest)",
                EXIT_ABANDONED_THREADS,
            )
        return EXIT_OK
    finally:
        shutdown.done.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
