"""Group commit of fsync work: one ``syncfs`` covers every thread waiting for one.

Semantics: docs/loader.md#durable-writes (batched installs).

Installing a generation fsyncs each of its ~30 files and directories before the
rename that publishes it; a cold start of 100 plugins spends most of its install
time there. Inside :func:`group_sync` (a context manager around a batch of installs,
inherited by the ``asyncio.to_thread`` workers it starts), :func:`controllerbus._fs.fsync_tree`
and :func:`~controllerbus._fs.fsync_dir` instead wait for a ``syncfs(2)`` of the file
system that *started after they asked*: the first waiter runs it for everyone who
has asked so far, the others wait for it. The order of events per generation does
not change (its files are on disk before the rename that publishes it, the rename
before the generation is recorded), only the number of flushes does.

``syncfs`` is Linux-only; elsewhere (or if it fails) the per-file fsyncs are kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["GroupSync", "current_group", "group_sync"]


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()


class GroupSync:
    """Flushes the file system of ``root`` for every caller of :meth:`sync`, in groups."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._cond = threading.Condition()
        self._asked = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is on disk
        self._running = False
        self.flushes = 0
        """How many ``syncfs`` calls were made (for tests and benchmarks)."""

    def sync(self) -> None:
        """Return once a ``syncfs`` that started after this call has finished.

        Raises:
            OSError: ``syncfs`` failed (the caller falls back to fsync).
        """
        assert _SYNCFS is not None
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._done < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                # Lead a flush for every ticket asked so far (ours included).
                self._running = True
                target = self._asked
                self._cond.release()
                error: OSError | None = None
                try:
                    error = _syncfs(self._root)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                if error is not None:
                    raise error
                self._done = max(self._done, target)
                self.flushes += 1


def _syncfs(root: Path) -> OSError | None:
    assert _SYNCFS is not None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            return OSError(errno, os.strerror(errno), str(root))
        return None
    finally:
        os.close(fd)


_CURRENT: contextvars.ContextVar[GroupSync | None] = contextvars.ContextVar(
    "controllerbus_group_sync", default=None
)


def current_group() -> GroupSync | None:
    """The group of the current context, if a batch is under way and ``syncfs`` exists."""
    return _CURRENT.get()


@contextlib.contextmanager
def group_sync(root: Path) -> Iterator[GroupSync | None]:
    """Batch the fsyncs of this context (and threads started from it) under ``root``.

    Yields ``None`` (and changes nothing) where ``syncfs`` is not available.
    """
    if _SYNCFS is None:
        yield None
        return
    group = GroupSync(root)
    token = _CURRENT.set(group)
    try:
        yield group
    finally:
        _CURRENT.reset(token)
