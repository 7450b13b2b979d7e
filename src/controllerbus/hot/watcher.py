"""A file watcher on a thread that hands each debounced batch of changes to asyncio.

:class:`BatchWatcher` watches a fixed set of paths (files, or directories
recursively) with watchfiles' notify backend (inotify on Linux) and calls
``on_batch(paths)`` on the event loop for every group of changes: the group ends
after ``step_ms`` without a new event, or after ``debounce_ms`` at most. An
editor's save burst (write temp file, rename, chmod) is one batch.

A watch that cannot be set up (a path vanished, the inotify watch limit is
reached) raises :class:`WatchError` from :meth:`BatchWatcher.start`, never a silent
fallback to no reloads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from controllerbus.errors import ControllerBusError

__all__ = ["DEBOUNCE_MS", "STEP_MS", "BatchWatcher", "WatchError"]

logger = logging.getLogger(__name__)

#: Longest time a batch of changes is held back.
DEBOUNCE_MS = 80
#: Quiet time that ends a batch.
STEP_MS = 10


class WatchError(ControllerBusError):
    """A file watch could not be set up."""

    def __init__(self, paths: Iterable[Path], reason: str) -> None:
        self.paths = tuple(paths)
        self.reason = reason
        super().__init__(self.paths, reason)

    def __str__(self) -> str:
        shown = ", ".join(str(p) for p in self.paths[:3])
        more = f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else ""
        return (
            f"cannot watch {shown}{more}: {self.reason}. Hot reload needs a working "
            "watch: check the path exists, or raise the inotify limit "
            "(sysctl fs.inotify.max_user_watches / max_user_instances)"
        )


class BatchWatcher:
    """Watch ``paths`` on a daemon thread; see the module docstring."""

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Set the watches up (raises :class:`WatchError`) and start the thread."""
        from watchfiles._rust_notify import RustNotify

        missing = [p for p in self.paths if not p.exists()]
        if missing:
            raise WatchError(missing, "no such file or directory")
        try:
            notifier = RustNotify([str(p) for p in self.paths], False, False, 50, True, False)
        except (OSError, RuntimeError) as exc:
            raise WatchError(self.paths, str(exc) or type(exc).__name__) from None
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(notifier, loop), name="cbus-hot-watch", daemon=True
        )
        self._thread.start()

    def _run(self, notifier: object, loop: asyncio.AbstractEventLoop) -> None:
        from watchfiles import Change, DefaultFilter

        ignore = DefaultFilter()
        watch = notifier.watch  # type: ignore[attr-defined]
        try:
            while not self._stop.is_set():
                raw = watch(self._debounce_ms, self._step_ms, 500, self._stop)
                if raw == "stop":
                    return
                if raw in ("timeout", "signal"):
                    continue
                changed = sorted({path for change, path in raw if ignore(Change(change), path)})
                if changed:
                    try:
                        loop.call_soon_threadsafe(self._on_batch, changed)
                    except RuntimeError:  # the loop is closed
                        return
        except Exception:
            logger.exception("the hot-reload file watcher stopped")
        finally:
            notifier.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop watching; returns once the thread ended (within one step)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
