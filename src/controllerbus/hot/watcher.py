"""Hot mode's file watch: debounced batches of changes handed to a callback.

A thin layer over the package's one watcher, :mod:`controllerbus._watch`: the paths
a plugin is made of (``pyproject.toml`` files, and package directories watched
recursively, so a new file in a package counts) become a
:class:`~controllerbus._watch.WatchSet`; every batch after the watch is set up goes
to ``on_batch(paths)`` on the event loop. A batch ends after ``step_ms`` without a
new event, or ``debounce_ms`` after its first change at most: an editor's save
burst (write temp file, rename, chmod) is one batch.

A watch that cannot be set up (a path vanished, the inotify watch limit is reached)
raises :class:`~controllerbus._watch.WatchError` from :meth:`BatchWatcher.start`,
never a silent fallback to no reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from controllerbus._watch import Watcher, WatchError, WatchSet

__all__ = ["DEBOUNCE_MS", "STEP_MS", "BatchWatcher", "WatchError"]

logger = logging.getLogger(__name__)

#: Longest time a batch of changes is held back.
DEBOUNCE_MS = 80
#: Quiet time that ends a batch.
STEP_MS = 10


class BatchWatcher:
    """Watch ``paths`` (files, or directories recursively); see the module docstring."""

    def __init__(
        self,
        paths: Iterable[Path],
        on_batch: Callable[[list[str]], object],
        *,
        debounce_ms: int = DEBOUNCE_MS,
        step_ms: int = STEP_MS,
    ) -> None:
        self.paths = tuple(sorted({Path(p).absolute() for p in paths}, key=str))
        self._on_batch = on_batch
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Set the watch up and return once it is (raises :class:`WatchError`)."""
        from watchfiles import DefaultFilter

        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise WatchError(
                f"cannot watch {', '.join(missing[:3])}: no such file or directory; "
                "hot reload needs every path of the plugin to exist"
            )
        watchset = WatchSet.of(
            trees=[p for p in self.paths if p.is_dir()],
            files=[p for p in self.paths if not p.is_dir()],
        )
        watcher = Watcher(
            watchset,
            accept=DefaultFilter(),
            debounce_ms=self._debounce_ms,
            step_ms=self._step_ms,
            stop=self._stop,
        )
        armed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(watcher, armed), name="cbus-hot-watch")
        await armed

    async def _run(self, watcher: Watcher, armed: asyncio.Future[None]) -> None:
        try:
            async for batch in watcher:
                if batch.first:
                    armed.set_result(None)
                elif batch.paths:
                    self._on_batch(list(batch.paths))
        except WatchError as exc:
            if not armed.done():
                armed.set_exception(exc)
            else:
                logger.error("hot: the file watch broke, no more reloads: %s", exc)
        finally:
            if not armed.done():
                armed.cancel()

    async def stop(self) -> None:
        """Stop watching; returns once the watch ended (within one step)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
