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

Uses the package's one watcher, :class:`controllerbus._watch.Watcher` (watchfiles'
public ``watch``): its first batch says the watch is set up, and the compile runs
only then; while it runs, the notifier keeps collecting changes for the next batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from controllerbus.compiler.api import CODEGEN_ROOT, CompileResult, compile_plugin
from controllerbus.compiler.graph import analyse
from controllerbus.compiler.options import CompileOptions
from controllerbus.errors import CompileError

if TYPE_CHECKING:
    from watchfiles import Change

    from controllerbus._watch import Batch

__all__ = ["DEBOUNCE_MS", "STEP_MS", "watch_compile"]

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
    from controllerbus._watch import Watcher, WatchSet

    exclude = (options.output_dir.absolute(), (options.codegen_dir or CODEGEN_ROOT).absolute())

    def keep(_change: Change, path: str) -> bool:
        return not any(Path(path).is_relative_to(e) for e in exclude)

    roots = _initial_roots(targets)
    last_hash: str | None = None
    rearmed = False
    while True:
        existing = [r for r in roots if r.exists()]
        logger.info("watching %d paths", len(existing))
        watchset = WatchSet.of(
            trees=[r for r in existing if r.is_dir()],
            files=[r for r in existing if not r.is_dir()],
        )
        watcher = Watcher(
            watchset, accept=keep, debounce_ms=debounce_ms, step_ms=step_ms, stop=stop_event
        )
        # Watcher.__iter__ is a generator: closing it ends the watch at once.
        batches = cast("Generator[Batch, None, None]", iter(watcher))
        with contextlib.closing(batches):
            if next(batches, None) is None:
                return  # stopped before the watch was set up
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
            for batch in batches:
                if logger.isEnabledFor(logging.INFO):
                    shown = ", ".join(batch.paths[:5])
                    logger.info("%d changed: %s", len(batch.paths), shown)
                break
            else:
                return  # the stop event was set


def _initial_roots(targets: Sequence[Path]) -> tuple[Path, ...]:
    try:
        return analyse(targets).watch_roots
    except CompileError:
        # No graph yet (the first compile will report why): watch the target
        # directories whole until a compile succeeds and narrows the set.
        return tuple(Path(t).absolute() for t in targets)
