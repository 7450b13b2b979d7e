"""One file watcher for the whole package, on watchfiles' public ``watch``/``awatch``.

Used by the filesystem loader (``loader/filesystem.py``) and the compiler's
``--watch``; hot mode reuses it. Three parts:

* :class:`WatchSet`: *what* is watched: ``trees`` (directories, recursively),
  ``dirs`` (a directory's own entries only) and ``files`` (single files).
* :class:`Watcher`: iterate it (``for`` in a thread, ``async for`` on the event loop)
  to get one :class:`Batch` per group of changes, debounced.
* :class:`WatchError`: a watch that cannot be set up (a missing path, the inotify
  watch limit) fails loudly, never by silently missing changes.

The start-before-first-pass guarantee lives here and only here: a watcher's first
batch is empty, has ``first=True`` and is yielded only once the watch is set up.
Run the first full pass for it; whatever changes from then on, also while a pass
runs (the watch stays set up while the consumer works), comes in a later batch.
So nothing written between "list the files" and "start watching" is ever lost.

Debounce (watchfiles' own): a batch closes once no change came for ``step_ms``,
or at the latest ``debounce_ms`` after its first change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

from controllerbus import _fs
from controllerbus.errors import ControllerBusError

if TYPE_CHECKING:
    from watchfiles import Change

__all__ = ["Accept", "Batch", "StopEvent", "WatchError", "WatchSet", "Watcher"]

logger = logging.getLogger(__name__)

Accept = Callable[["Change", str], bool]
"""A filter on each ``(change, path)``: ``True`` keeps it (watchfiles' ``watch_filter``)."""


class StopEvent(Protocol):
    """What ``stop=`` takes: a ``threading.Event`` (for ``for``) or ``asyncio.Event``."""

    def is_set(self) -> bool: ...


class _Options(TypedDict):
    """The keyword arguments both ``watch`` and ``awatch`` get, by name."""

    watch_filter: Accept
    debounce: int
    step: int
    stop_event: StopEvent | None
    rust_timeout: int
    yield_on_timeout: bool
    recursive: bool


class WatchError(ControllerBusError, OSError):
    """A watch could not be set up or broke; the message says which path and why."""


def _absolute(paths: Iterable[str | Path]) -> tuple[str, ...]:
    return tuple(sorted({str(Path(p).absolute()) for p in paths}))


@dataclass(frozen=True, slots=True)
class WatchSet:
    """Absolute paths to watch; build it with :meth:`of`.

    Attributes:
        trees: directories watched with everything below them.
        dirs: directories whose own entries are watched (not their sub-directories'
            contents).
        files: single files (watched by path: a file replaced by a rename may need
            a new :class:`Watcher`; watch its directory in ``dirs`` if that matters).
    """

    trees: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        *,
        trees: Iterable[str | Path] = (),
        dirs: Iterable[str | Path] = (),
        files: Iterable[str | Path] = (),
    ) -> WatchSet:
        """A watch set of these paths, made absolute, sorted, without duplicates."""
        return cls(_absolute(trees), _absolute(dirs), _absolute(files))

    def existing(self) -> WatchSet:
        """The same set without the paths that do not exist (now)."""
        return WatchSet(*(tuple(p for p in group if Path(p).exists()) for group in self._groups()))

    def paths(self) -> tuple[str, ...]:
        """Every path handed to the watcher."""
        return tuple(sorted({p for group in self._groups() for p in group}))

    def __contains__(self, path: object) -> bool:
        """Whether a changed ``path`` (absolute) is one this set watches."""
        if not isinstance(path, str):
            return False
        if path in self.files or path in self.dirs:
            return True
        if str(Path(path).parent) in self.dirs:
            return True
        return any(_fs.is_within(path, tree) for tree in self.trees)

    def _groups(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        return self.trees, self.dirs, self.files


@dataclass(frozen=True, slots=True)
class Batch:
    """One group of changes.

    Attributes:
        paths: the changed paths (absolute, sorted); empty for the first batch.
        first: the watch has just been set up: run the first full pass now.
    """

    paths: tuple[str, ...]
    first: bool = False


class Watcher:
    """Debounced batches of changes to a :class:`WatchSet` (see the module docstring).

    Iterate with ``for`` (blocking; run it in a thread or a CLI loop; Ctrl-C raises
    ``KeyboardInterrupt``) or ``async for`` (on the event loop). Iteration ends when
    ``stop`` is set. Each iteration sets up its own watch, and closing the iterator
    (``contextlib.aclosing(aiter(watcher))``) ends it at once.

    Args:
        watchset: what to watch. Every path must exist (see :meth:`WatchSet.existing`).
        accept: keeps a ``(change, path)`` when it returns ``True``; applied after
            the watch set's own filter. ``None``: every change in the set counts.
        debounce_ms: the longest a batch stays open after its first change.
        step_ms: the quiet time that closes a batch; also how soon the first batch
            comes and how often ``stop`` is looked at.
        stop: set it to end the iteration.

    Raises (while iterating):
        WatchError: a path does not exist, the watch limit is reached, or the
            watch broke.
    """

    def __init__(
        self,
        watchset: WatchSet,
        *,
        accept: Accept | None = None,
        debounce_ms: int = 1600,
        step_ms: int = 50,
        stop: StopEvent | None = None,
    ) -> None:
        if not watchset.paths():
            raise WatchError("nothing to watch: the watch set is empty")
        self.watchset = watchset
        self._accept = accept
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._stop = stop

    def _wanted(self, change: Change, path: str) -> bool:
        return path in self.watchset and (self._accept is None or self._accept(change, path))

    def _options(self) -> _Options:
        # Named, and the same for both flavours. yield_on_timeout + rust_timeout=step:
        # the first (empty) yield says "armed"; later empty ones are skipped.
        return {
            "watch_filter": self._wanted,
            "debounce": self._debounce_ms,
            "step": self._step_ms,
            "stop_event": self._stop,
            "rust_timeout": self._step_ms,
            "yield_on_timeout": True,
            "recursive": bool(self.watchset.trees),
        }

    def _error(self, exc: Exception) -> WatchError:
        where = ", ".join(self.watchset.paths()[:3])
        more = len(self.watchset.paths()) - 3
        if more > 0:
            where += f" (+{more} more)"
        return WatchError(
            f"cannot watch {where}: {exc}; check that the paths exist, or raise the "
            "inotify limits (fs.inotify.max_user_watches, fs.inotify.max_user_instances)"
        )

    def __iter__(self) -> Iterator[Batch]:
        from watchfiles import watch

        first = True
        try:
            # Closed with this generator: the watch ends when the consumer stops.
            with contextlib.closing(watch(*self.watchset.paths(), **self._options())) as seen:
                for changes in seen:
                    if batch := self._batch(changes, first):
                        first = False
                        yield batch
        except (OSError, RuntimeError) as exc:  # RuntimeError: watchfiles' internal errors
            raise self._error(exc) from exc

    async def __aiter__(self) -> AsyncGenerator[Batch, None]:
        from watchfiles import awatch

        first = True
        try:
            async with contextlib.aclosing(
                awatch(*self.watchset.paths(), **self._options())
            ) as seen:
                async for changes in seen:
                    if batch := self._batch(changes, first):
                        first = False
                        yield batch
        except (OSError, RuntimeError) as exc:  # RuntimeError: watchfiles' internal errors
            raise self._error(exc) from exc

    def _batch(self, changes: set[tuple[Change, str]], first: bool) -> Batch | None:
        if first:
            # Armed. Changes already in this batch are covered by the first pass.
            return Batch((), first=True)
        if not changes:
            return None
        paths = tuple(sorted({path for _change, path in changes}))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%d change(s): %s", len(paths), ", ".join(paths[:5]))
        return Batch(paths)
