"""The hot-reload loop: save a source file, the running process serves the new code.

:class:`HotReloader` owns a set of :class:`~controllerbus.hot.targets.HotTarget`
and a :class:`~controllerbus.loader.host.PluginHost`:

1. compile each target in-process (:func:`controllerbus.compiler.compile_plugin`,
   on a thread; the event loop keeps serving);
2. watch exactly the files the compiler's dependency graph names
   (``CompileResult.watch_roots``: every ``pyproject.toml`` and every vendored
   package directory, so a new file in a package counts), one watcher for all
   targets, short debounce (:mod:`~controllerbus.hot.watcher`);
3. on a batch of changes, rebuild only the targets whose inputs changed, one at a
   time, and hand each wheel to the host: verify → install → trial import →
   switch, rollback on failure. The config set's controllers of the old
   generation restart on the new one (the host's ``on_change``), with their state
   carried across (:mod:`~controllerbus.hot.handoff`);
4. a compile error (a syntax error, with file:line) or a load error leaves the last
   good generation serving; it is logged and recorded in the manifest, and the
   next save tries again.

When a compile changes the set of watched files (a new path dependency, a package
added), the watcher is rebuilt around the new set. Changes saved while a rebuild
runs are queued and trigger the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus.errors import CompileError, LoaderError
from controllerbus.hot.targets import HotTarget
from controllerbus.hot.watcher import DEBOUNCE_MS, STEP_MS, BatchWatcher, WatchError

if TYPE_CHECKING:
    from controllerbus.compiler import CompileResult
    from controllerbus.hot.handoff import Handoff
    from controllerbus.loader.host import PluginHost

__all__ = ["HotReloader", "ReloadEvent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """One build-and-load of one target.

    Attributes:
        target: the target's name (its plugin's default binary id).
        binary_id: the plugin's binary id ("" if the compile failed before naming it).
        ok: the new code serves (or nothing changed).
        number: how many generations of this plugin have served, this one included.
        changed: the changed files that triggered it (empty for the first build).
        generation: the serving generation id.
        unchanged: the wheel was already active (e.g. a file touched, not changed).
        error: why the compile or load failed (with file:line where known).
        phases: milliseconds per phase: ``debounce`` (newest change to the batch),
            ``compile``, then the loader's (``verify``, ``install``, ``trial``,
            ``stop old``, ``activate``, ``on_change``, ...).
        carried: controllers of the new generation given their predecessor's state.
        total_ms: from the batch arriving to the new code serving.
    """

    target: str
    binary_id: str
    ok: bool
    number: int = 0
    changed: tuple[str, ...] = ()
    generation: str = ""
    unchanged: bool = False
    error: str | None = None
    phases: Mapping[str, float] = field(default_factory=dict)
    carried: int = 0
    total_ms: float = 0.0

    def describe(self) -> str:
        """One line for a person: what changed, how long each phase took, state carried."""
        what = ", ".join(Path(p).name for p in self.changed[:3]) or "first build"
        if len(self.changed) > 3:
            what += f" (+{len(self.changed) - 3})"
        if not self.ok:
            return f"{self.target}: {what} -> FAILED, previous code keeps serving: {self.error}"
        if self.unchanged:
            return f"{self.target}: {what} -> no change to the plugin"
        times = " ".join(f"{k} {v:.0f}" for k, v in self.phases.items() if k != "leak check")
        carried = f", {self.carried} state(s) carried" if self.carried else ""
        return (
            f"{self.target}: {what} -> generation #{self.number} serving in "
            f"{self.total_ms:.0f} ms ({times} ms{carried})"
        )


@dataclass(slots=True)
class _Slot:
    target: HotTarget
    roots: tuple[Path, ...]
    binary_id: str = ""
    generations: int = 0


class HotReloader:
    """Compile, watch, rebuild and reload hot targets; see the module docstring.

    Args:
        host: the plugin host to load into (build it with the same ``handoff``).
        targets: the plugins, one wheel each.
        work_dir: where wheels and codegen overlays go (``<work>/<slug>/``).
        handoff: the host's state handoff, for the ``carried`` count of events.
        on_reload: called with every :class:`ReloadEvent` (on the event loop).
        debounce_ms, step_ms: see :mod:`~controllerbus.hot.watcher`.
    """

    def __init__(
        self,
        host: PluginHost,
        targets: Sequence[HotTarget],
        *,
        work_dir: Path,
        handoff: Handoff | None = None,
        on_reload: Callable[[ReloadEvent], object] | None = None,
        debounce_ms: int = DEBOUNCE_MS,
        step_ms: int = STEP_MS,
    ) -> None:
        self._host = host
        self._slots = [_Slot(t, t.paths) for t in targets]
        self._work_dir = work_dir.absolute()
        self._handoff = handoff
        self._on_reload = on_reload
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._watcher: BatchWatcher | None = None
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self.events: list[ReloadEvent] = []
        """Every event so far (the last 100)."""

    async def start(self) -> list[ReloadEvent]:
        """Build and load every target once, then start watching.

        A target that fails to build is reported (and watched, so a fix loads it);
        it does not stop the others.

        Raises:
            WatchError: a watch cannot be set up.
        """
        events = [await self._build(slot, ()) for slot in self._slots]
        await self._arm()
        self._worker = asyncio.create_task(self._work(), name="cbus-hot-reloader")
        return events

    async def aclose(self) -> None:
        """Stop watching and rebuilding (the host's plugins stay loaded)."""
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    @property
    def watched(self) -> tuple[Path, ...]:
        """The paths being watched now."""
        return self._watcher.paths if self._watcher is not None else ()

    # -- internals ---------------------------------------------------------------------------

    async def _arm(self) -> None:
        roots = {r for slot in self._slots for r in slot.roots}
        if self._watcher is not None and set(self._watcher.paths) == roots:
            return
        watcher = BatchWatcher(
            roots, self._on_batch, debounce_ms=self._debounce_ms, step_ms=self._step_ms
        )
        # The new watch is up before the old one goes: no change falls in between
        # (one seen by both only costs a no-op compile).
        await watcher.start()
        old, self._watcher = self._watcher, watcher
        if old is not None:
            await old.stop()
        logger.info("hot: watching %d path(s)", len(roots))

    def _on_batch(self, paths: list[str]) -> None:
        self._pending.update(dict.fromkeys(paths))
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._busy = True
            try:
                self._wake.clear()
                # An editor's temp files (gone by now, no source suffix) are noise.
                changed = tuple(p for p in self._pending if _relevant(p))
                self._pending = {}
                for slot in self._slots:
                    mine = tuple(p for p in changed if _under(Path(p), slot.roots))
                    if mine:
                        await self._build(slot, mine)
                try:
                    await self._arm()
                except WatchError as exc:
                    logger.error("hot: %s; still watching the previous set", exc)
            finally:
                self._busy = False

    async def _build(self, slot: _Slot, changed: tuple[str, ...]) -> ReloadEvent:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        if changed:
            phases["debounce"] = _since_newest_change(changed)
        target = slot.target
        out = self._work_dir / target.slug
        try:
            result = await asyncio.to_thread(_compile, target, out)
        except CompileError as exc:
            return self._failed(slot, changed, phases, f"compile failed: {exc}", started)
        phases["compile"] = (time.perf_counter() - started) * 1000
        slot.binary_id = result.binary_id
        slot.roots = result.watch_roots
        try:
            loaded = await self._host.load(result.wheel)
        except LoaderError as exc:
            return self._failed(slot, changed, phases, str(exc), started)
        phases.update(loaded.phases)
        if not loaded.unchanged:
            slot.generations += 1
        stats = self._handoff.stats.get(loaded.binary_id) if self._handoff else None
        event = ReloadEvent(
            target=target.name,
            binary_id=loaded.binary_id,
            ok=True,
            number=slot.generations,
            changed=changed,
            generation=loaded.generation,
            unchanged=loaded.unchanged,
            phases=phases,
            carried=stats.restored if stats is not None and changed else 0,
            total_ms=(time.perf_counter() - started) * 1000,
        )
        logger.info("hot: %s", event.describe())
        return self._emit(event)

    def _failed(
        self,
        slot: _Slot,
        changed: tuple[str, ...],
        phases: dict[str, float],
        error: str,
        started: float,
    ) -> ReloadEvent:
        binary_id = slot.binary_id or slot.target.name
        event = ReloadEvent(
            target=slot.target.name,
            binary_id=binary_id,
            ok=False,
            number=slot.generations,
            changed=changed,
            error=error,
            phases=phases,
            total_ms=(time.perf_counter() - started) * 1000,
        )
        # The loader logs and records its own failures; a compile error is ours.
        if error.startswith("compile failed"):
            logger.error("hot: plugin %s: %s", binary_id, error)
            self._host.record_error(binary_id, str(slot.target.paths[0]), error)
        return self._emit(event)

    def _emit(self, event: ReloadEvent) -> ReloadEvent:
        self.events = [*self.events[-99:], event]
        if self._on_reload is not None:
            try:
                self._on_reload(event)
            except Exception:
                logger.exception("hot: the on_reload callback failed")
        return event


def _compile(target: HotTarget, out: Path) -> CompileResult:
    """The one call into the compiler (in-process hatchling; run on a thread)."""
    from controllerbus.compiler import CompileOptions, compile_plugin

    options = CompileOptions(output_dir=out / "wheels", codegen_dir=out / "codegen")
    return compile_plugin(list(target.paths), options)


def _relevant(path: str) -> bool:
    return path.endswith((".py", ".pyi", ".toml")) or os.path.exists(path)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _since_newest_change(paths: Sequence[str]) -> float:
    """Milliseconds since the newest mtime among ``paths`` (0 if none can be read)."""
    newest = 0
    for p in paths:
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(p).st_mtime_ns)
    if not newest:
        return 0.0
    return max(0.0, (time.time_ns() - newest) / 1e6)
