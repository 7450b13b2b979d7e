"""Recompile whenever a file of the plugin changes (``cbus-compile compile --watch``).

What is watched is exactly the graph's :attr:`~controllerbus.compiler.graph.Graph.watch_roots`:
every ``pyproject.toml`` of the graph and every vendored package directory (so files
added to a package count too), not whole project trees. When a compile changes that
set (a new path dependency), the watcher is rebuilt around the new set.

Debounce: changes are grouped until 50 ms pass without a new one, or for at most
300 ms (``DEBOUNCE_MS``/``STEP_MS``); an editor's save burst gives one compile.
Go's watcher waits 1 s of quiet, watchfiles' default groups for up to 1.6 s.

No change is lost between compiles: the watcher is started *before* each compile,
so anything saved while a compile runs is queued and triggers the next one.

Uses watchfiles' public :func:`watchfiles.watch` with ``yield_on_timeout=True``: the
generator only starts watching on its first ``next()``, so :func:`_armed` pulls one
(empty, after ``step_ms``) batch before the compile. From then on the notifier
collects events in its own thread while the generator is suspended in the compile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.compiler.api import CODEGEN_ROOT, CompileResult, compile_plugin
from controllerbus.compiler.graph import analyse
from controllerbus.compiler.options import CompileOptions
from controllerbus.errors import CompileError

if TYPE_CHECKING:
    from watchfiles import Change

__all__ = ["DEBOUNCE_MS", "STEP_MS", "watch_compile"]

_Batches = Generator["set[tuple[Change, str]]", None, None]

logger = logging.getLogger(__name__)

DEBOUNCE_MS = 300
STEP_MS = 50


def watch_compile(
    targets: Sequence[Path],
    options: CompileOptions,
    *,
    on_result: Callable[[CompileResult], object],
    on_error: Callable[[CompileError], object],
    stop_event: threading.Event | None = None,
    debounce_ms: int = DEBOUNCE_MS,
    step_ms: int = STEP_MS,
) -> None:
    """Compile now, then again after every relevant change, until stopped.

    Compile errors go to ``on_error`` and the watch goes on; the next change retries.
    Returns when ``stop_event`` is set.

    Args:
        targets, options: as for :func:`~controllerbus.compiler.compile_plugin`.
        on_result: called with each successful result (also no-op ones).
        on_error: called with each compile error.
        stop_event: set it (from another thread) to stop watching.
        debounce_ms: longest time to group changes.
        step_ms: quiet time that ends a group of changes.

    Raises:
        KeyboardInterrupt: on SIGINT while waiting (the CLI exits 0 on it).
        OSError: a watch cannot be set up (e.g. the inotify watch limit is reached);
            reported, never silently ignored.
    """
    exclude = (options.output_dir.absolute(), (options.codegen_dir or CODEGEN_ROOT).absolute())
    roots = _initial_roots(targets)
    last_hash: str | None = None
    rearmed = False
    while True:
        existing = sorted({r for r in roots if r.exists()})
        logger.info("watching %d paths", len(existing))
        batches = _armed(existing, exclude, debounce_ms, step_ms, stop_event)
        try:
            if batches is None:
                return
            new_roots = roots
            try:
                result = compile_plugin(targets, options)
            except CompileError as exc:
                on_error(exc)
            else:
                # The compile right after re-arming is a no-op unless something changed
                # meanwhile; do not report the same result twice.
                if not (rearmed and not result.rebuilt and result.build_hash == last_hash):
                    on_result(result)
                last_hash = result.build_hash
                new_roots = result.watch_roots
            rearmed = False
            if set(new_roots) != set(roots):
                # The graph changed shape: watch the new set, then compile again so
                # nothing saved while re-arming is missed.
                roots, rearmed = new_roots, True
                continue
            for changes in batches:
                if changes:
                    changed = sorted(path for _change, path in changes)
                    if logger.isEnabledFor(logging.INFO):
                        logger.info("%d changed: %s", len(changed), ", ".join(changed[:5]))
                    break
            else:
                return  # the stop event was set
        finally:
            if batches is not None:
                batches.close()


def _armed(
    paths: Sequence[Path],
    exclude: Sequence[Path],
    debounce_ms: int,
    step_ms: int,
    stop_event: threading.Event | None,
) -> _Batches | None:
    """A :func:`watchfiles.watch` generator that is already watching ``paths``.

    ``None`` if ``stop_event`` was set before the watch started. Changes under
    ``exclude`` (the output and codegen directories) and the usual junk
    (:class:`watchfiles.DefaultFilter`) are dropped.
    """
    from watchfiles import DefaultFilter, watch

    junk = DefaultFilter()

    def keep(change: Change, path: str) -> bool:
        return junk(change, path) and not any(Path(path).is_relative_to(e) for e in exclude)

    batches = watch(
        *paths,
        watch_filter=keep,
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop_event,
        rust_timeout=step_ms,
        yield_on_timeout=True,
        raise_interrupt=True,
    )
    # The first next() creates the notifier; it yields an empty set after one step
    # (or the changes of that step, which the compile that follows covers).
    for _first in batches:
        return _skip_empty(batches)
    return None


def _skip_empty(batches: _Batches) -> _Batches:
    """``batches`` without the empty sets ``yield_on_timeout`` produces."""
    try:
        for changes in batches:
            if changes:
                yield changes
    finally:
        batches.close()


def _initial_roots(targets: Sequence[Path]) -> tuple[Path, ...]:
    try:
        return analyse(targets).watch_roots
    except CompileError:
        # No graph yet (the first compile will report why): watch the target
        # directories whole until a compile succeeds and narrows the set.
        return tuple(Path(t).absolute() for t in targets)
