"""Load plugin wheels into the running process, and take them out again completely.

:class:`PluginHost` drives the pipeline of one state directory:

``load(wheel)``
    verify (nothing written on failure) → host dependencies → install a generation
    (atomic) → for a reload, a trial import in a subprocess with the new generation's
    interpreter → unload the old generation → activate the new one. If activation
    fails after the switch, the old generation is activated again. Every outcome is
    recorded in the manifest; the last good generation keeps serving.

``unload(binary_id)``
    ``pre_unload()`` hook → stop the plugin's controllers (factory contexts set,
    controllers removed, their ``ExecController`` directives closed) and wait until
    their tasks have ended → remove its resolver controller → purge every module of
    the generation and the import caches → garbage-collect → check with weak
    references that the plugin's modules, classes, factories and controllers are
    gone; survivors are reported with their holders and kept in the manifest.

All public methods run on the event loop; blocking work (hashing, installing,
subprocesses) goes to threads or asyncio subprocesses. Loads and unloads are
serialised by a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from controllerbus.bus.directives import ExecController
from controllerbus.bus.resolver import ResolverController
from controllerbus.errors import ControllerBusError
from controllerbus.loader.errors import (
    InvalidPlugin,
    InvalidWheel,
    LoaderError,
    PluginFactoryError,
    PluginImportError,
    PluginPrepareError,
    PluginRestoreError,
)
from controllerbus.loader.generation import Generation, apply_install, plan_install
from controllerbus.loader.hostdeps import check_host_requirements
from controllerbus.loader.manifest import (
    Manifest,
    ManifestRecord,
    read_manifest,
    utc_now,
    wheel_key,
    write_manifest,
)
from controllerbus.loader.plugin_resolver import ConstructHook, PluginResolver, StateHandoff
from controllerbus.loader.probe import describe_exception, inspect_plugin, shape_problem
from controllerbus.loader.purge import LeakProbe, modules_under, purge_generation
from controllerbus.loader.trial import TrialServer, trial_in_subprocess
from controllerbus.loader.verify import VerifiedWheel, build_hash_of, verify_wheel

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.loader.state import StateDir

__all__ = ["LoadResult", "PluginHost", "UnloadReport"]

logger = logging.getLogger(__name__)

Prepare = Literal["fork", "subprocess", "inprocess"]

# What plugin code may raise that the host turns into a load error. SystemExit too:
# a plugin calling sys.exit() at import must not stop the daemon.
_PLUGIN_ERRORS = (Exception, SystemExit)

DEFAULT_PREPARE: Prepare = "fork" if hasattr(os, "fork") else "subprocess"

# Seconds to wait between leak checks after an unload (about 0.4 s in all).
_SETTLE_DELAYS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True, slots=True)
class UnloadReport:
    """What an unload removed and what survived it.

    Attributes:
        binary_id: the plugin.
        generation: the generation id unloaded.
        modules: module names purged from ``sys.modules``.
        survivors: descriptions of tracked objects still alive, with their holders.
        stuck: tasks that did not end within the stop timeout.
        tracked: how many objects the leak probe watched.
        unload_ms: wall time of the whole unload.
    """

    binary_id: str
    generation: str
    modules: tuple[str, ...]
    survivors: tuple[str, ...]
    stuck: tuple[str, ...]
    tracked: int
    unload_ms: float

    @property
    def clean(self) -> bool:
        """Nothing survived and every task ended."""
        return not self.survivors and not self.stuck


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A plugin now active on the bus.

    Attributes:
        binary_id / binary_version: the plugin's identity.
        generation: the generation id (the wheel's sha256).
        factories: config ids the plugin serves.
        load_ms: verify + install + (trial import) + activate, in milliseconds.
        reused: the generation directory already existed.
        unchanged: this exact wheel was already active; nothing was done.
        replaced: the unload report of the generation this one replaced.
        phases: milliseconds per phase (verify, install, trial, stop old, activate, ...).
    """

    binary_id: str
    binary_version: str
    generation: str
    factories: tuple[str, ...]
    load_ms: float
    reused: bool = False
    unchanged: bool = False
    replaced: UnloadReport | None = None
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Active:
    binary_id: str
    binary_version: str
    generation: Generation
    plugin: Any
    resolver: PluginResolver
    controller: ResolverController
    task: asyncio.Task[Any]
    loaded_at: float = field(default_factory=time.time)


class _Phases:
    """Wall time of each phase of a load, for the debug log."""

    def __init__(self, started: float) -> None:
        self._last = started
        self._marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self._marks.append((name, (now - self._last) * 1000))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {ms:.1f} ms" for name, ms in self._marks)

    def as_dict(self) -> dict[str, float]:
        return dict(self._marks)


@dataclass(eq=False, slots=True)
class _Detached:
    """A generation taken off the bus and purged, whose objects may still be dying."""

    binary_id: str
    generation: str
    modules: tuple[str, ...]
    probe: LeakProbe
    stuck: tuple[str, ...]
    started: float


def _entry_point(verified: VerifiedWheel) -> tuple[str, str]:
    points = verified.entry_points
    if len(points) != 1:
        names = ", ".join(ep.name for ep in points)
        raise InvalidWheel(
            verified.path,
            [
                "expected exactly one controllerbus.plugins entry point, "
                f"found {len(points)}: {names or 'none'}"
            ],
        )
    return points[0].name, points[0].value


class PluginHost:
    """Loads, reloads and unloads plugin wheels on one bus, with one state directory.

    Args:
        bus: the bus to register plugin factories on.
        state: an entered (locked) :class:`~controllerbus.loader.state.StateDir`.
        prepare: how a reload tries the new generation before switching (import the
            entry point and construct the factories out of process):
            ``"fork"`` (default on POSIX; a warm server forks one child per trial,
            milliseconds), ``"subprocess"`` (a fresh interpreter of the new
            generation's own venv, ~0.4 s) or ``"inprocess"`` (no trial; a failure
            after the switch still rolls back).
        stop_timeout: seconds to wait for a plugin's tasks to end on unload.
        on_change: awaited after the set of active generations changed and before
            the old generation's objects are checked for leaks: the place to drop
            references to the old generation's objects (the daemon re-types its
            config set there, so configs of the old classes go away).
        handoff: carries controller state across reloads (``snapshot()`` before the
            old generation stops, ``restore(state)`` as the new one's controllers are
            constructed); a failed restore rolls the reload back.
    """

    def __init__(
        self,
        bus: Bus,
        state: StateDir,
        *,
        prepare: Prepare = DEFAULT_PREPARE,
        stop_timeout: float = 10.0,
        on_change: Callable[[], Awaitable[None]] | None = None,
        handoff: StateHandoff | None = None,
    ) -> None:
        self._bus = bus
        self._handoff = handoff
        self._on_change = on_change
        self._state = state
        self._prepare = prepare
        self._trials: TrialServer | None = None
        self._stop_timeout = stop_timeout
        self._active: dict[str, _Active] = {}
        self._lock = asyncio.Lock()
        self.unload_reports: deque[UnloadReport] = deque(maxlen=32)
        """The most recent unload reports (reloads included), oldest first."""
        self._manifest = read_manifest(state.path)
        # Records saying "active" are from a previous process: nothing is loaded now.
        self._manifest = Manifest(
            plugins=[
                r.model_copy(update={"status": "unloaded"}) if r.status == "active" else r
                for r in self._manifest.plugins
            ]
        )

    # -- queries -------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written."""
        return self._manifest

    def active(self) -> dict[str, str]:
        """Active plugins: binary id → generation id."""
        return {bid: a.generation.id for bid, a in sorted(self._active.items())}

    def active_wheel(self, binary_id: str) -> Path | None:
        """The wheel file the active generation of ``binary_id`` came from."""
        active = self._active.get(binary_id)
        return active.generation.wheel.path if active is not None else None

    # -- load ----------------------------------------------------------------------------------

    async def load(self, wheel: Path) -> LoadResult:
        """Load ``wheel``, replacing the active generation of the same plugin if any.

        Raises:
            LoaderError: verification, host dependencies, install, trial import or
                activation failed. The manifest records the failure; a previously
                active generation of the plugin keeps serving.
        """
        async with self._lock:
            return await self._load(Path(wheel))

    async def _load(self, wheel: Path) -> LoadResult:
        started = time.perf_counter()
        phases = _Phases(started)
        key = wheel_key(wheel)
        verified: VerifiedWheel | None = None
        # Only the old generation's identity is kept here, never its objects: a local
        # reference to the old plugin would make its unload look like a leak.
        old_generation: Generation | None = None
        try:
            verified = await asyncio.to_thread(verify_wheel, wheel)
            phases.mark("verify")
            key, ep_value = _entry_point(verified)
            if key in self._active:
                old_generation = self._active[key].generation
            if old_generation is not None and old_generation.id == verified.sha256:
                return self._unchanged(key)
            self._check_host(verified, key, old_generation)
            plan = plan_install(self._state.path, verified)
            generation = await asyncio.to_thread(apply_install, plan)
            phases.mark("install")
            if old_generation is not None and self._prepare != "inprocess":
                await self._trial_import(generation, key, ep_value)
                phases.mark("trial")
        except LoaderError as exc:
            self._record_failure(key, wheel, verified, exc, serving=old_generation is not None)
            self._gc()
            raise
        detached = await self._deactivate(key, capture=True) if old_generation else None
        phases.mark("stop old")
        try:
            active = self._activate(generation, key, ep_value)
            phases.mark("activate")
        except LoaderError as exc:
            restored = old_generation is not None and self._rollback(key, old_generation)
            await self._changed()
            if detached is not None:
                await self._confirm(detached)
            if self._handoff is not None:
                self._handoff.finish(key)
            self._record_failure(key, wheel, verified, exc, serving=restored)
            self._gc()
            raise
        self._active[key] = active
        self._prewarm()
        await self._changed()
        phases.mark("on_change")
        if self._handoff is not None:
            await self._handoff.settle(key)
            phases.mark("handoff")
            if (failure := self._handoff.restore_error(key)) is not None:
                restore_error = PluginRestoreError(key, wheel, failure)
                await self._undo_switch(key, old_generation, detached, restore_error, verified)
            self._handoff.finish(key)
        replaced = await self._confirm(detached) if detached is not None else None
        phases.mark("leak check")
        load_ms = (time.perf_counter() - started) * 1000
        logger.debug("plugin %s load phases: %s", key, phases)
        self._record(
            ManifestRecord(
                binary_id=key,
                binary_version=active.binary_version,
                build_hash=verified.build_hash,
                wheel=str(wheel),
                wheel_sha256=verified.sha256,
                generation=generation.id,
                status="active",
                factories=active.resolver.config_ids(),
                loaded_at=utc_now(),
                load_ms=round(load_ms, 3),
                leaks=list(replaced.survivors) if replaced is not None else [],
            )
        )
        self._gc()
        logger.info(
            "plugin %s %s active (generation %s, %.1f ms%s)",
            key,
            active.binary_version,
            generation.id[:12],
            load_ms,
            ", replaced " + replaced.generation[:12] if replaced is not None else "",
            extra={"plugin": key, "generation": generation.id},
        )
        return LoadResult(
            key,
            active.binary_version,
            generation.id,
            tuple(active.resolver.config_ids()),
            load_ms,
            reused=generation.reused,
            replaced=replaced,
            phases=phases.as_dict(),
        )

    def _prewarm(self) -> None:
        """Start the trial server in the background, so the first reload is fast too."""
        if self._prepare != "fork" or self._trials is not None:
            return
        self._trials = TrialServer(self._state.tmp_dir)
        # If the bus is closing, the server starts on demand instead, if ever.
        with contextlib.suppress(ControllerBusError):
            self._bus.spawn(self._trials.start(), name="trial-import server")

    def _unchanged(self, binary_id: str) -> LoadResult:
        active = self._active[binary_id]
        return LoadResult(
            binary_id,
            active.binary_version,
            active.generation.id,
            tuple(active.resolver.config_ids()),
            0.0,
            reused=True,
            unchanged=True,
        )

    def _check_host(self, verified: VerifiedWheel, binary_id: str, old: Generation | None) -> None:
        # The generation being replaced is excluded: its modules do not "shadow"
        # the new one, and its site-packages is not the host's.
        check_host_requirements(
            verified.requires_dist,
            plugin=binary_id,
            first_party_packages=verified.top_level,
            generation_path=old.path if old is not None else None,
            importable_shadows=True,
        )

    async def _trial_import(self, generation: Generation, binary_id: str, ep_value: str) -> None:
        entry = f"{binary_id}={ep_value}"
        if self._prepare == "fork":
            if self._trials is None:
                self._trials = TrialServer(self._state.tmp_dir)
            result = await self._trials.trial(generation.site_packages, entry)
        else:
            result = await trial_in_subprocess(generation.python, self._state.tmp_dir, entry)
        if not result.get("ok"):
            raise PluginPrepareError(binary_id, generation.wheel.path, str(result.get("error")))

    def _activate(self, generation: Generation, binary_id: str, ep_value: str) -> _Active:
        """Import the entry point and put the plugin's factories on the bus (sync).

        Whatever the plugin raises (``SystemExit`` included), the generation is
        purged again before the error leaves: nothing half-imported stays behind.
        """
        site = str(generation.site_packages)
        sys.path.insert(0, site)
        importlib.invalidate_caches()
        wheel = generation.wheel.path
        within = str(generation.path)
        try:
            module_name, _, attr = ep_value.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
            except _PLUGIN_ERRORS as exc:
                reason = describe_exception(exc, within=within)
                raise PluginImportError(binary_id, wheel, reason) from None
            if (problem := shape_problem(obj)) is not None:
                raise InvalidPlugin(binary_id, wheel, f"could not load hot plugin, {problem}")
            try:
                factories = list(obj.factories(self._bus))
            except _PLUGIN_ERRORS as exc:
                reason = describe_exception(exc, within=within)
                raise PluginFactoryError(binary_id, wheel, reason) from None
            if issues := inspect_plugin(obj, binary_id, factories):
                raise InvalidPlugin(binary_id, wheel, "; ".join(issues))
        except BaseException:
            purge_generation(generation.path)
            raise
        resolver = PluginResolver(
            self._bus,
            binary_id,
            obj.binary_version,
            factories,
            on_construct=self._construct_hook(binary_id),
        )
        controller = ResolverController(self._bus, resolver)
        task = self._bus.run_controller(controller)
        return _Active(
            binary_id, str(obj.binary_version), generation, obj, resolver, controller, task
        )

    def _construct_hook(self, binary_id: str) -> ConstructHook | None:
        handoff = self._handoff
        if handoff is None:
            return None
        return lambda config, controller: handoff.restore_into(binary_id, config, controller)

    async def _undo_switch(
        self,
        key: str,
        old: Generation | None,
        detached: _Detached | None,
        exc: LoaderError,
        verified: VerifiedWheel,
    ) -> None:
        """Take an activated generation off again (its state restore failed); raise ``exc``."""
        assert self._handoff is not None
        failed = await self._deactivate(key)
        restored = False
        if old is not None:
            self._handoff.rearm(key)
            restored = self._rollback(key, old)
        await self._changed()
        await self._handoff.settle(key)
        await self._confirm(failed)
        if detached is not None:
            await self._confirm(detached)
        self._handoff.finish(key)
        self._record_failure(key, verified.path, verified, exc, serving=restored)
        self._gc()
        raise exc

    def _rollback(self, binary_id: str, old: Generation) -> bool:
        """Activate ``old`` again after a failed switch; ``True`` if it serves again."""
        try:
            restored = self._activate(old, binary_id, _entry_point(old.wheel)[1])
        except LoaderError as exc:
            logger.error(
                "plugin %s: rolling back to the previous generation failed too: %s", binary_id, exc
            )
            return False
        self._active[binary_id] = restored
        logger.warning(
            "plugin %s: the new generation failed; generation %s is serving again",
            binary_id,
            old.id[:12],
        )
        return True

    # -- unload --------------------------------------------------------------------------------

    async def unload(self, binary_id: str) -> UnloadReport:
        """Unload the active generation of ``binary_id`` and record it as ``unloaded``.

        Raises:
            LoaderError: no such plugin is active.
        """
        async with self._lock:
            if binary_id not in self._active:
                loaded = ", ".join(sorted(self._active)) or "none"
                raise LoaderError(f"plugin {binary_id} is not loaded (loaded: {loaded})")
            detached = await self._deactivate(binary_id)
            await self._changed()
            report = await self._confirm(detached)
            record = self._manifest.get(binary_id)
            if record is not None:
                self._record(
                    record.model_copy(
                        update={
                            "status": "unloaded",
                            "unloaded_at": utc_now(),
                            "leaks": list(report.survivors),
                        }
                    )
                )
            self._gc()
            return report

    async def aclose(self) -> list[UnloadReport]:
        """Unload every active plugin (reverse load order) and stop the trial server."""
        reports = []
        for binary_id in reversed(list(self._active)):
            reports.append(await self.unload(binary_id))
        if self._trials is not None:
            await self._trials.aclose()
            self._trials = None
        return reports

    async def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            await self._on_change()
        except Exception:
            logger.exception("the on_change hook of the plugin host failed")

    async def _deactivate(self, binary_id: str, *, capture: bool = False) -> _Detached:
        """Stop the plugin and purge its generation; leaks are checked by :meth:`_confirm`.

        Safe to cancel: an interrupted unload still purges the generation (the host
        no longer knows the plugin, so nothing else could) and records it. With
        ``capture``, the controllers' state is snapshotted first (a reload).
        """
        started = time.perf_counter()
        active = self._active.pop(binary_id)
        generation = active.generation
        probe = _probe_plugin(active)
        modules = tuple(modules_under(generation.path))
        try:
            if capture and self._handoff is not None:
                self._handoff.capture(binary_id, active.resolver.factories())
            _call_pre_unload(active)
            tasks = self._stop_plugin_controllers(active)
            active.resolver.release()
            # From here on nothing in this frame may refer to the plugin's objects.
            del active
            stuck = await self._wait_tasks(tasks)
            # Dispose callbacks and task done-callbacks run on the next loop iterations.
            for _ in range(3):
                await asyncio.sleep(0)
        except BaseException:
            purge_generation(generation.path)
            self._record_interrupted(binary_id)
            raise
        report = purge_generation(generation.path)
        return _Detached(binary_id, generation.id, modules or report.modules, probe, stuck, started)

    def _record_interrupted(self, binary_id: str) -> None:
        record = self._manifest.get(binary_id)
        if record is None:
            return
        logger.warning("plugin %s: unload interrupted; its generation was purged", binary_id)
        self._record(
            record.model_copy(
                update={
                    "status": "unloaded",
                    "unloaded_at": utc_now(),
                    "error": "unload interrupted (cancelled); the generation was purged",
                }
            )
        )

    async def _confirm(self, detached: _Detached) -> UnloadReport:
        """Collect garbage and report what of the unloaded generation is still alive.

        Directives released by the unload (and by ``on_change``) let go of the old
        objects over a few loop iterations, as their cancelled tasks finish: give
        them a short, bounded time to settle before calling anything a leak.
        """
        alive = True
        for delay in _SETTLE_DELAYS:
            alive = bool(detached.probe.alive())
            if not alive:
                break
            await asyncio.sleep(delay)
        # survivors() collects garbage again and scans referrers: only when needed.
        survivors = tuple(str(s) for s in detached.probe.survivors()) if alive else ()
        unload_ms = (time.perf_counter() - detached.started) * 1000
        short = detached.generation[:12]
        if survivors:
            logger.warning(
                "plugin %s: %d object(s) survived the unload of generation %s:\n  %s",
                detached.binary_id,
                len(survivors),
                short,
                "\n  ".join(survivors),
            )
        logger.info(
            "plugin %s unloaded (generation %s, %d modules purged, %d objects checked, %.1f ms)",
            detached.binary_id,
            short,
            len(detached.modules),
            len(detached.probe),
            unload_ms,
        )
        report = UnloadReport(
            detached.binary_id,
            detached.generation,
            detached.modules,
            survivors,
            detached.stuck,
            len(detached.probe),
            unload_ms,
        )
        self.unload_reports.append(report)
        return report

    def _stop_plugin_controllers(self, active: _Active) -> list[asyncio.Task[Any]]:
        tasks: list[asyncio.Task[Any]] = []
        # Controllers first: their resolvers stop before their ExecController goes away.
        tasks.extend(active.resolver.pre_plugin_unload())
        ours = {id(f) for f in active.resolver.factories()}
        for inst in self._bus.get_directives():
            directive = inst.get_directive()
            if isinstance(directive, ExecController) and id(directive.factory) in ours:
                tasks.extend(inst.resolver_tasks())
                inst.close()
        active.controller.close()
        tasks.extend(self._bus.remove_controller(active.controller))
        active.task.cancel()
        tasks.append(active.task)
        return tasks

    async def _wait_tasks(self, tasks: Iterable[asyncio.Task[Any]]) -> tuple[str, ...]:
        pending = {t for t in tasks if not t.done()}
        if not pending:
            return ()
        done, still = await asyncio.wait(pending, timeout=self._stop_timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.debug(
                    "task %s ended with %r while unloading", task.get_name(), task.exception()
                )
        return tuple(sorted(t.get_name() for t in still))

    # -- manifest and state ---------------------------------------------------------------------

    def record_error(self, binary_id: str, source: str, error: str) -> None:
        """Record a failure that happened before a wheel existed (a compile error).

        A serving plugin's record stays active and carries ``error``; otherwise the
        plugin is recorded as failed with ``source`` in place of the wheel.
        """
        existing = self._manifest.get(binary_id)
        if existing is not None and existing.status == "active":
            self._record(existing.model_copy(update={"error": error}))
            return
        self._record(
            ManifestRecord(
                binary_id=binary_id, wheel=source, status="failed", error=error, loaded_at=utc_now()
            )
        )

    def _record(self, record: ManifestRecord) -> None:
        self._manifest = self._manifest.upsert(record)
        write_manifest(self._state.path, self._manifest)

    def _record_failure(
        self,
        key: str,
        wheel: Path,
        verified: VerifiedWheel | None,
        exc: LoaderError,
        *,
        serving: bool,
    ) -> None:
        # Text, not the exception: a retained log record must not pin its frames.
        logger.error("plugin %s: %s", key, str(exc), extra={"plugin": key, "wheel": str(wheel)})
        existing = self._manifest.get(key)
        if serving and existing is not None:
            # The previous generation keeps serving: its record stays active, with the error.
            self._record(existing.model_copy(update={"error": str(exc)}))
            return
        self._record(
            ManifestRecord(
                binary_id=key,
                binary_version="",
                build_hash=build_hash_of(verified.version) if verified is not None else "",
                wheel=str(wheel),
                wheel_sha256=verified.sha256 if verified is not None else "",
                generation="",
                status="failed",
                error=str(exc),
                loaded_at=utc_now(),
            )
        )

    def _gc(self) -> None:
        keep = {a.generation.id for a in self._active.values()}
        try:
            removed = self._state.gc_generations(keep)
        except OSError as exc:
            logger.warning("could not garbage-collect old generations: %s", exc)
            return
        if removed:
            logger.debug(
                "removed %d old generation(s): %s", len(removed), ", ".join(r[:12] for r in removed)
            )


def _probe_plugin(active: _Active) -> LeakProbe:
    """Weak references to everything of the plugin that must die with the unload."""
    probe = LeakProbe()
    probe.track_generation(active.generation.path)
    _track(probe, active.plugin, f"plugin object of {active.binary_id}")
    for factory in active.resolver.factories():
        _track(probe, factory.inner, f"factory {factory.config_id()}")
        for controller in factory.constructed():
            _track(probe, controller, f"controller {controller.get_controller_info().id}")
    return probe


def _call_pre_unload(active: _Active) -> None:
    hook = getattr(active.plugin, "pre_unload", None)
    if not callable(hook):
        return
    try:
        hook()
    except Exception as exc:
        logger.error(
            "plugin %s: pre_unload() raised: %s", active.binary_id, describe_exception(exc)
        )


def _track(probe: LeakProbe, obj: object, label: str) -> None:
    try:
        probe.track(obj, label)
    except TypeError:
        logger.debug("cannot weak-reference %s; not tracked", label)
