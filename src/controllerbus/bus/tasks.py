"""An owner for a dynamic set of background tasks.

``asyncio.TaskGroup`` cancels every sibling when one child fails, which is right for
a unit of work but wrong for a bus: one failing resolver must not stop the others.
:class:`TaskSet` owns tasks spawned at any time, logs the unexpected failures of
tasks nobody awaits, and on :meth:`aclose` cancels them all and waits until every
one is done, so closing an owner leaves nothing running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

__all__ = ["TaskSet", "forever", "wait_first"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def forever() -> None:
    """Wait until cancelled (Go: ``<-ctx.Done()``)."""
    await asyncio.get_running_loop().create_future()


async def wait_first(events: Sequence[asyncio.Event]) -> None:
    """Wait until any of ``events`` is set (Go: ``select`` over several ``Done()``)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class TaskSet:
    """Owns background tasks; :meth:`aclose` cancels and awaits all of them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has started; no new task may be spawned then."""
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this set.

        Raises:
            RuntimeError: the set is closed (the coroutine is closed, not leaked).
        """
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is closed; cannot start {name or 'task'}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Nobody awaits a background task: this is the one place its failure is seen.
            logger.error("%s: task %s failed", self._name, task.get_name(), exc_info=exc)

    def cancel_all(self) -> None:
        """Request cancellation of every task without waiting."""
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        """Cancel every task and wait until all are done (including ones they spawn)."""
        self._closed = True
        current = asyncio.current_task()
        while pending := [t for t in self._tasks if t is not current and not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
