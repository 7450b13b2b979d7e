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

Uses :class:`watchfiles._rust_notify.RustNotify` directly (the seam watchfiles' own
``watch()`` wraps, and the one its tests fake): the public generator only starts
watching on its first ``next()``, after which a compile would block it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from controllerbus.compiler.api import CompileResult, compile_plugin
from controllerbus.compiler.graph import analyse
from controllerbus.errors import CompileError

__all__ = ["DEBOUNCE_MS", "STEP_MS", "watch_compile"]

logger = logging.getLogger(__name__)

DEBOUNCE_MS = 300
STEP_MS = 50


def watch_compile(
    targets: Sequence[Path],
    *,
    output_dir: Path,
    on_result: Callable[[CompileResult], object],
    on_error: Callable[[CompileError], object],
    stop_event: threading.Event | None = None,
    codegen_dir: Path | None = None,
    binary_id: str | None = None,
    binary_version: str | None = None,
    build_prefix: str | None = None,
    isolated: bool = False,
    cleanup: bool = True,
    debounce_ms: int = DEBOUNCE_MS,
    step_ms: int = STEP_MS,
) -> None:
    """Compile now, then again after every relevant change, until stopped.

    Compile errors go to ``on_error`` and the watch goes on; the next change retries.
    Returns when ``stop_event`` is set.

    Args:
        targets, output_dir, codegen_dir, binary_id, binary_version, build_prefix,
            isolated, cleanup: as for :func:`~controllerbus.compiler.compile_plugin`.
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
    from watchfiles import Change, DefaultFilter
    from watchfiles._rust_notify import RustNotify

    ignore = DefaultFilter()
    roots = _initial_roots(targets)
    last_hash: str | None = None
    rearmed = False
    while True:
        existing = sorted({str(r) for r in roots if r.exists()})
        logger.info("watching %d paths", len(existing))
        with RustNotify(existing, False, False, 50, True, False) as notifier:
            new_roots = roots
            try:
                result = compile_plugin(
                    targets,
                    output_dir=output_dir,
                    codegen_dir=codegen_dir,
                    binary_id=binary_id,
                    binary_version=binary_version,
                    build_prefix=build_prefix,
                    isolated=isolated,
                    cleanup=cleanup,
                )
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
            exclude = [Path(p) for p in (output_dir.absolute(), _codegen_root(codegen_dir))]
            while True:
                raw = notifier.watch(debounce_ms, step_ms, 0, stop_event)
                if raw == "stop":
                    return
                if raw == "signal":
                    raise KeyboardInterrupt
                if raw == "timeout":
                    continue
                changed = sorted(
                    path
                    for change, path in raw
                    if ignore(Change(change), path)
                    and not any(Path(path).is_relative_to(e) for e in exclude)
                )
                if changed:
                    if logger.isEnabledFor(logging.INFO):
                        logger.info("%d changed: %s", len(changed), ", ".join(changed[:5]))
                    break


def _initial_roots(targets: Sequence[Path]) -> tuple[Path, ...]:
    try:
        return analyse(targets).watch_roots
    except CompileError:
        # No graph yet (the first compile will report why): watch the target
        # directories whole until a compile succeeds and narrows the set.
        return tuple(Path(t).absolute() for t in targets)


def _codegen_root(codegen_dir: Path | None) -> Path:
    from controllerbus.compiler.api import CODEGEN_ROOT

    return (codegen_dir or CODEGEN_ROOT).absolute()
