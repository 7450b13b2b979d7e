"""Load plugin wheels into the running process, and take them out again completely.

:class:`PluginHost` drives the pipeline of one state directory:

``load(wheel)``
    verify (nothing written on failure) → host dependencies → install a generation
    (atomic) → a trial of the new generation out of process (the host's
    :class:`~controllerbus.loader.trial.TrialRunner`; first loads too: nothing of a
    generation is imported here before a trial process imported it and built its
    factories) → unload the old generation → activate the new one, guarded by the
    :class:`~controllerbus.loader.crashguard.ActivationGuard` marker. If activation
    fails after the switch, the old generation is activated again. Every outcome is
    recorded in the manifest (the host's
    :class:`~controllerbus.loader.manifest.ManifestBook`); the last good generation
    keeps serving.

``unload(binary_id)``
    :func:`~controllerbus.loader.activation.deactivate` (stop the plugin's
    controllers, purge its generation) → ``on_change`` →
    :func:`~controllerbus.loader.activation.confirm_unload` (weak references prove
    the plugin's modules, classes, factories and controllers are gone; survivors
    are reported with their holders and kept in the manifest) → threads, open files
    and child processes the generation left (:mod:`~controllerbus.loader.residue`)
    are reported the same way.

All public methods run on the event loop; blocking work (hashing, installing,
subprocesses) goes to threads or asyncio subprocesses. Loads and unloads are
serialised by a lock. :meth:`PluginHost.wait_for_generation` and
:meth:`PluginHost.wait_for_record` let a caller await an outcome instead of polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from controllerbus.ipc.host import ProcessPlugin, ProcessPluginError
from controllerbus.ipc.loading import (
    Isolation,
    ProcessActive,
    declared_isolation,
    process_plugin_for,
    resolve_isolation,
)
from controllerbus.ipc.spare import SparePool
from controllerbus.loader.activation import (
    ActivePlugin,
    DetachedPlugin,
    UnloadReport,
    activate,
    confirm_unload,
    deactivate,
    entry_point_of,
)
from controllerbus.loader.ahead import TrialsAhead
from controllerbus.loader.crashguard import ActivationGuard
from controllerbus.loader.errors import (
    InsecurePath,
    InvalidWheel,
    LoaderError,
    PluginPrepareError,
    PluginQuarantined,
    PluginRestoreError,
)
from controllerbus.loader.generation import (
    Generation,
    apply_install,
    finish_install,
    generation_id_of,
    plan_install,
)
from controllerbus.loader.hostdeps import check_host_requirements
from controllerbus.loader.manifest import (
    Manifest,
    ManifestBook,
    ManifestRecord,
    PluginStatus,
    wheel_key,
)
from controllerbus.loader.permissions import check_directory
from controllerbus.loader.plugin_resolver import ConstructHook, StateHandoff
from controllerbus.loader.production import LoadPolicy, install_all_ahead
from controllerbus.loader.residue import Baseline, find_residue, record_thread_origins
from controllerbus.loader.sandbox import DEFAULT_LIMITS, TrialLimits
from controllerbus.loader.trial import TrialRunner, default_trial_runner
from controllerbus.loader.trust import UntrustedWheel
from controllerbus.loader.verify import VerifiedWheel, verify_wheel
from controllerbus.loader.wheelsource import Resolution

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.loader.state import StateDir

__all__ = ["LoadResult", "PluginHost", "UnloadReport"]

logger = logging.getLogger(__name__)


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


# Loop iterations given to the config set's restarts between the switch and the
# leak check (idle iterations cost microseconds).
_RESTART_ITERATIONS = 20


class PluginHost:
    """Loads, reloads and unloads plugin wheels on one bus, with one state directory.

    Args:
        bus: the bus to register plugin factories on.
        state: an entered (locked) :class:`~controllerbus.loader.state.StateDir`.
        trials: how every load tries the new generation before importing it here
            (import the entry point and construct the factories out of process); the
            host owns it and closes it in :meth:`aclose`. Default:
            :func:`~controllerbus.loader.trial.default_trial_runner` in the state
            directory's ``tmp`` (``"fork"`` on POSIX, else ``"subprocess"``) with
            ``limits``; use ``trial_runner("none", ...)`` for no trial (except for a
            generation the daemon died activating; a failure after the switch still
            rolls back).
        limits: deadline and resource limits of the default trial runner.
        stop_timeout: seconds to wait for a plugin's tasks to end on unload.
        on_change: awaited after the set of active generations changed and before
            the old generation's objects are checked for leaks: the place to drop
            references to the old generation's objects (the daemon re-types its
            config set there, so configs of the old classes go away).
        on_config_ids_changed: like ``on_change`` (awaited at the same points, after
            ``on_change``), told the config ids whose factories were added, replaced
            or removed, or ``None`` when not known (a rollback): the daemon re-types
            only the config-set keys of those ids, so a reload among many plugins
            costs what it costs alone.
        policy: trust file and dependency-wheel directories
            (:class:`~controllerbus.loader.production.LoadPolicy`; default: no
            pinning, no dependency wheels).
        insecure_permissions: trust the state directory and wheels even when someone
            else could write them (:mod:`~controllerbus.loader.permissions`).
        handoff: carries controller state across reloads (``snapshot()`` before the
            old generation stops, ``restore(state)`` as the new one's controllers are
            constructed); a failed restore rolls the reload back.

    Raises:
        InsecurePath: the state directory is not trusted (see ``insecure_permissions``).
        isolation: where plugins run by default: ``"inprocess"`` or ``"process"``
            (a child process of the generation's interpreter, see docs/ipc.md). A
            plugin's metadata may choose for itself; ``isolation_overrides``
            (binary id → isolation) overrides both.
        process_options: extra :class:`~controllerbus.ipc.host.ProcessPlugin`
            arguments (heartbeats, backoff) for process plugins.
    """

    def __init__(
        self,
        bus: Bus,
        state: StateDir,
        *,
        trials: TrialRunner | None = None,
        stop_timeout: float = 10.0,
        on_change: Callable[[], Awaitable[None]] | None = None,
        on_config_ids_changed: Callable[[frozenset[str] | None], Awaitable[None]] | None = None,
        limits: TrialLimits = DEFAULT_LIMITS,
        insecure_permissions: bool = False,
        policy: LoadPolicy | None = None,
        isolation: Isolation = "inprocess",
        isolation_overrides: Mapping[str, Isolation] | None = None,
        process_options: Mapping[str, Any] | None = None,
        handoff: StateHandoff | None = None,
    ) -> None:
        self._strict = not insecure_permissions
        if self._strict:
            check_directory(state.path, "state directory")
        self._bus = bus
        self._policy = policy or LoadPolicy(exclude=(state.path,))
        # Generations installed ahead (in parallel) for loads to come: spared by gc.
        self._ahead: set[str] = set()
        self._isolation: Isolation = isolation
        self._isolation_overrides = dict(isolation_overrides or {})
        self._process_options = dict(process_options or {})
        self.spares = SparePool()
        """Warm spare children for process plugins (see docs/ipc.md)."""
        self._handoff = handoff
        self._on_change = on_change
        self._on_ids_changed = on_config_ids_changed
        self._retired_ids: dict[str, tuple[str, ...]] = {}
        self._state = state
        self._limits = limits
        self._trials = trials if trials is not None else default_trial_runner(state.tmp_dir, limits)
        self._trials_ahead = TrialsAhead(self._trials)
        self._guard = ActivationGuard(state.path)
        record_thread_origins()
        # What existed before each active generation was imported (for the residue check).
        self._baselines: dict[str, Baseline] = {}
        self._stop_timeout = stop_timeout
        self._active: dict[str, ActivePlugin | ProcessActive] = {}
        self._lock = asyncio.Lock()
        self._recorded = asyncio.Event()
        self.unload_reports: deque[UnloadReport] = deque(maxlen=32)
        """The most recent unload reports (reloads included), oldest first."""
        self._book = ManifestBook(state.path, on_write=self._on_record)
        self._recover_crash()

    # -- queries -------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written."""
        return self._book.manifest

    @property
    def strict_permissions(self) -> bool:
        """Whether directories and wheels others could write are refused."""
        return self._strict

    @property
    def trials(self) -> TrialRunner:
        """The trial runner reloads use."""
        return self._trials

    @property
    def policy(self) -> LoadPolicy:
        """The trust and dependency-wheel settings loads follow."""
        return self._policy

    def active(self) -> dict[str, str]:
        """Active plugins: binary id → generation id."""
        return {bid: a.generation.id for bid, a in sorted(self._active.items())}

    def active_wheel(self, binary_id: str) -> Path | None:
        """The wheel file the active generation of ``binary_id`` came from."""
        active = self._active.get(binary_id)
        return active.generation.wheel.path if active is not None else None

    # -- waiting for outcomes ------------------------------------------------------------------

    async def wait_for_record(
        self, key: str, accept: Callable[[ManifestRecord], bool] | None = None
    ) -> ManifestRecord:
        """Wait until the manifest holds a record under ``key`` (that ``accept`` accepts).

        ``key`` is a binary id or a :func:`~controllerbus.loader.manifest.wheel_key`.
        Returns at once if the current record already qualifies; otherwise after the
        write that makes it so (no polling). Wrap in ``asyncio.timeout`` to bound it.
        """
        while True:
            record = self._book.get(key)
            if record is not None and (accept is None or accept(record)):
                return record
            await self._recorded.wait()

    async def wait_for_generation(self, binary_id: str, not_this: str | None = None) -> str:
        """Wait until ``binary_id`` is recorded active on a generation other than ``not_this``.

        The manifest records a reload once the old generation's unload is confirmed,
        so this returns after the whole switch, with the new generation id.
        """
        record = await self.wait_for_record(
            binary_id, lambda r: r.status == "active" and r.generation != not_this
        )
        return record.generation

    def _on_record(self, record: ManifestRecord) -> None:
        # One event per write, replaced at once: every waiter wakes and looks again.
        event, self._recorded = self._recorded, asyncio.Event()
        event.set()

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

    async def install_ahead(self, wheels: Sequence[Path]) -> None:
        """Install the generations of independent ``wheels`` in parallel, not activating
        them: the loads that follow find them installed (a cold start of many plugins).
        Errors are left for those loads to report."""
        async with self._lock:  # so no gc runs between an install and its recording
            self._trials.start()  # warm while the installs run
            self._ahead |= await install_all_ahead(
                self._state.path,
                self._policy,
                wheels,
                verify=self._verify,
                on_installed=self._installed_ahead,
            )

    def _installed_ahead(self, generation: Generation) -> None:
        # Trial it now, while the other installs run (docs/loader.md#trials-ahead).
        try:
            key, _ep = entry_point_of(generation.wheel)
            isolation = self._isolation_of(key, generation.wheel)
        except LoaderError:
            return  # the load reports it
        if isolation == "inprocess" and self._guard.crash(generation.id) is None:
            self._trials_ahead.installed(generation)

    async def _load(self, wheel: Path) -> LoadResult:
        started = time.perf_counter()
        phases = _Phases(started)
        key = wheel_key(wheel)
        verified: VerifiedWheel | None = None
        # Only the old generation's identity is kept here, never its objects: a local
        # reference to the old plugin would make its unload look like a leak.
        old_generation: Generation | None = None
        try:
            # Trust first: an unpinned file is refused before anything reads it as a zip.
            trusted = await asyncio.to_thread(self._policy.check_trust, wheel)
            verified = await asyncio.to_thread(self._verify, wheel)
            self._policy.same_bytes(trusted, verified)
            phases.mark("verify")
            key, ep_value = entry_point_of(verified)
            if key in self._active:
                old_generation = self._active[key].generation
            deps = await asyncio.to_thread(self._policy.resolve, verified)
            new_id = generation_id_of(verified.sha256, deps.shas)
            self._ahead.discard(new_id)  # this load owns it now
            if old_generation is not None and old_generation.id == new_id:
                return self._unchanged(key)
            crash = self._guard.crash(verified.sha256)
            if crash is not None and crash.status == "quarantined":
                raise PluginQuarantined(
                    key,
                    wheel,
                    f"the daemon died {crash.count} times while activating generation "
                    f"{verified.sha256[:12]} (last at {crash.last})",
                    self._state.path,
                )
            isolation = self._isolation_of(key, verified)
            if isolation == "inprocess":  # a process plugin may conflict with the host
                self._check_host(verified, key, old_generation, deps)
            plan = plan_install(
                self._state.path, verified, dependencies=deps.wheels, defer_finish=True
            )
            generation = await asyncio.to_thread(apply_install, plan)
            phases.mark("install")
            if isolation == "process":  # the new child's start is its trial
                result = await self._load_process(verified, generation, key, ep_value, started)
                # Like the in-process path: bytecode, fsync and cbus-durable after the switch.
                await asyncio.to_thread(finish_install, plan)
                return result
            await self._trial(generation, key, ep_value, suspect=crash is not None)
            phases.mark("trial")
        except LoaderError as exc:
            self._failed(key, wheel, verified, exc, serving=old_generation is not None)
            raise
        detached = await self._deactivate(key, capture=True) if old_generation else None
        phases.mark("stop old")
        try:
            active = self._activate(generation, key, ep_value)
            phases.mark("activate")
        except LoaderError as exc:
            restored = old_generation is not None and self._rollback(key, old_generation)
            self._retired_ids.pop(key, None)
            await self._changed(None)
            if detached is not None:
                await self._confirm(detached)
            if self._handoff is not None:
                self._handoff.finish(key)
            self._failed(key, wheel, verified, exc, serving=restored)
            raise
        old_ids = self._retired_ids.pop(key, ())
        self._active[key] = active
        self._trials.start()
        await self._changed({*old_ids, *_config_ids(active)})
        phases.mark("on_change")
        if self._handoff is not None:
            await self._handoff.settle(key)
            phases.mark("handoff")
            if (failure := self._handoff.restore_error(key)) is not None:
                restore_error = PluginRestoreError(key, wheel, failure)
                del active  # the failed generation must be able to die
                await self._undo_switch(key, old_generation, detached, restore_error, verified)
            self._handoff.finish(key)
        # Let the restarted controllers start before the leak check's full garbage
        # collections block the loop: they would stretch the serving gap by 100+ ms.
        for _ in range(_RESTART_ITERATIONS):
            await asyncio.sleep(0)
        replaced = await self._confirm(detached) if detached is not None else None
        phases.mark("leak check")
        load_ms = (time.perf_counter() - started) * 1000
        logger.debug("plugin %s load phases: %s", key, phases)
        self._book.loaded(
            verified,
            binary_id=key,
            binary_version=active.binary_version,
            wheel=wheel,
            generation=generation.id,
            factories=active.resolver.config_ids(),
            load_ms=load_ms,
            leaks=replaced.survivors if replaced is not None else (),
        )
        self._gc()
        # The new code serves already; bytecode and fsync finish the generation now,
        # off the serving path, and before load() returns.
        await asyncio.to_thread(finish_install, plan)
        phases.mark("finish")
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

    def _unchanged(self, binary_id: str) -> LoadResult:
        active = self._active[binary_id]
        return LoadResult(
            binary_id,
            active.binary_version,
            active.generation.id,
            tuple(_config_ids(active)),
            0.0,
            reused=True,
            unchanged=True,
        )

    def _check_host(
        self, verified: VerifiedWheel, binary_id: str, old: Generation | None, deps: Resolution
    ) -> None:
        # The generation being replaced is excluded: its modules do not "shadow"
        # the new one, and its site-packages is not the host's. Requirements served
        # by dependency wheels are not the host's business; their packages are checked
        # for shadowing like the plugin's own.
        check_host_requirements(
            deps.host_lines,
            plugin=binary_id,
            first_party_packages=(*verified.top_level, *deps.top_level),
            installed=self._policy.host_distributions(),
            generation_path=old.path if old is not None else None,
            importable_shadows=True,
        )

    def _isolation_of(self, binary_id: str, verified: VerifiedWheel) -> Isolation:
        try:
            declared = declared_isolation(verified, binary_id)
        except ValueError as exc:
            raise LoaderError(f"plugin {binary_id}: {exc}") from None
        return resolve_isolation(
            binary_id, declared, default=self._isolation, overrides=self._isolation_overrides
        )

    async def _load_process(
        self,
        verified: VerifiedWheel,
        generation: Generation,
        key: str,
        ep_value: str,
        started: float,
    ) -> LoadResult:
        """Start the new child; only once it is ready stop the old generation.

        The child's start is the reload's trial: a plugin that cannot import never
        gets that far, and the old generation (in-process or child) keeps serving.
        """
        plugin = process_plugin_for(
            self._bus, generation, key, ep_value, spares=self.spares, **self._process_options
        )
        try:
            await plugin.prepare()
        except ProcessPluginError as exc:
            raise PluginPrepareError(key, generation.wheel.path, str(exc)) from None
        detached = await self._deactivate(key) if key in self._active else None
        plugin.begin()
        old_ids = self._retired_ids.pop(key, ())
        self._active[key] = ProcessActive(key, generation, plugin)
        plugin.on_change = lambda p: self._book.process_changed(key, p.status.as_dict())
        await self._changed({*old_ids, *_config_ids(self._active[key])})
        replaced = await self._confirm(detached) if detached is not None else None
        load_ms = (time.perf_counter() - started) * 1000
        config_ids = sorted(f.config_id for f in plugin.factories)
        self._book.loaded(
            verified,
            binary_id=key,
            binary_version=plugin.binary_version,
            wheel=verified.path,
            generation=generation.id,
            factories=config_ids,
            load_ms=load_ms,
            leaks=replaced.survivors if replaced is not None else (),
            process=plugin.status.as_dict(),
        )
        self._gc()
        logger.info(
            "plugin %s %s active in process %s (generation %s, %.1f ms)",
            key,
            plugin.binary_version,
            plugin.status.pid,
            generation.id[:12],
            load_ms,
            extra={"plugin": key, "generation": generation.id},
        )
        return LoadResult(
            key,
            plugin.binary_version,
            generation.id,
            tuple(config_ids),
            load_ms,
            reused=generation.reused,
            replaced=replaced,
        )

    def process_plugin(self, binary_id: str) -> ProcessPlugin | None:
        """The running process plugin of ``binary_id`` (``None`` if in-process or absent)."""
        active = self._active.get(binary_id)
        return active.plugin if isinstance(active, ProcessActive) else None

    async def _trial(
        self, generation: Generation, binary_id: str, ep_value: str, *, suspect: bool
    ) -> None:
        if not suspect and await self._trials_ahead.take(generation, binary_id, ep_value):
            return  # this generation's trial passed while the installs ran
        runner = self._trials
        if suspect and runner.kind == "none":
            # A generation the daemon died activating gets a trial whatever the setting.
            runner = default_trial_runner(self._state.tmp_dir, self._limits)
        try:
            result = await runner.trial(generation, binary_id, ep_value)
        finally:
            if runner is not self._trials:
                await runner.aclose()
        if not result.ok:
            raise PluginPrepareError(binary_id, generation.wheel.path, result.error)

    def _construct_hook(self, binary_id: str) -> ConstructHook | None:
        handoff = self._handoff
        if handoff is None:
            return None
        return lambda config, controller: handoff.restore_into(binary_id, config, controller)

    async def _undo_switch(
        self,
        key: str,
        old: Generation | None,
        detached: DetachedPlugin | UnloadReport | None,
        exc: LoaderError,
        verified: VerifiedWheel,
    ) -> NoReturn:
        """Take an activated generation off again (its state restore failed); raise ``exc``."""
        assert self._handoff is not None
        failed = await self._deactivate(key)
        restored = False
        if old is not None:
            self._handoff.rearm(key)
            restored = self._rollback(key, old)
        self._retired_ids.pop(key, None)
        await self._changed(None)
        await self._handoff.settle(key)
        await self._confirm(failed)
        if detached is not None:
            await self._confirm(detached)
        self._handoff.finish(key)
        self._failed(key, verified.path, verified, exc, serving=restored)
        raise exc

    def _activate(self, generation: Generation, binary_id: str, ep_value: str) -> ActivePlugin:
        """:func:`activate`, between the crash guard's marker and a residue baseline."""
        baseline = Baseline.take()
        # A crash from here to end() marks the generation suspect on the next start.
        self._guard.begin(binary_id, generation.id, generation.wheel.path)
        try:
            active = activate(
                self._bus,
                generation,
                binary_id,
                ep_value,
                on_construct=self._construct_hook(binary_id),
            )
        except BaseException:
            self._guard.end(generation.id, ok=False)
            raise
        self._guard.end(generation.id, ok=True)
        self._baselines[generation.id] = baseline
        return active

    def _recover_crash(self) -> None:
        """Mark a generation the previous process died activating suspect or quarantined."""
        crash = self._guard.recover()
        if crash is None:
            return
        message = (
            f"the daemon died while activating generation {crash.generation[:12]} "
            f"(crash {crash.count})"
        )
        if crash.status == "quarantined":
            message += (
                "; quarantined: it is not loaded again until you run "
                f"`cbus plugins retry {crash.binary_id} --state-dir {self._state.path}`"
            )
        else:
            message += "; suspect: it is loaded again only after a trial import passes"
        logger.error("plugin %s: %s", crash.binary_id, message)
        self._book.crashed(
            crash.binary_id, Path(crash.wheel), crash.generation, message, crash.status
        )

    def _rollback(self, binary_id: str, old: Generation) -> bool:
        """Activate ``old`` again after a failed switch; ``True`` if it serves again."""
        try:
            restored = self._activate(old, binary_id, entry_point_of(old.wheel)[1])
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
            await self._changed(self._retired_ids.pop(binary_id, ()))
            report = await self._confirm(detached)
            self._book.unloaded(binary_id, report.survivors)
            self._gc()
            return report

    async def aclose(self) -> list[UnloadReport]:
        """Unload every active plugin (reverse load order) and close the trial runner."""
        reports = []
        for binary_id in reversed(list(self._active)):
            reports.append(await self.unload(binary_id))
        await self._trials_ahead.aclose()
        await self.spares.aclose()
        await self._trials.aclose()
        return reports

    async def _changed(self, config_ids: Iterable[str] | None) -> None:
        hooks: list[Callable[[], Awaitable[None]]] = []
        if self._on_change is not None:
            hooks.append(self._on_change)
        if (on_ids := self._on_ids_changed) is not None:
            ids = None if config_ids is None else frozenset(config_ids)
            hooks.append(lambda: on_ids(ids))
        for hook in hooks:
            try:
                await hook()
            except Exception:
                logger.exception("the on_change hook of the plugin host failed")

    async def _deactivate(
        self, binary_id: str, *, capture: bool = False
    ) -> DetachedPlugin | UnloadReport:
        # Its config ids (strings only) for the on_config_ids_changed hook that follows.
        self._retired_ids[binary_id] = tuple(_config_ids(self._active[binary_id]))
        if isinstance(self._active.get(binary_id), ProcessActive):
            return await _stop_process_plugin(self._active.pop(binary_id))  # type: ignore[arg-type]
        # The popped plugin goes straight into deactivate(): no reference stays here.
        if capture and self._handoff is not None:
            # A reload: snapshot the controllers' state just before they stop.
            active = self._active[binary_id]
            if isinstance(active, ActivePlugin):
                self._handoff.capture(binary_id, active.resolver.factories())
            del active
        try:
            return await deactivate(
                self._bus,
                self._active.pop(binary_id),  # type: ignore[arg-type]
                stop_timeout=self._stop_timeout,
            )
        except BaseException:
            if self._book.interrupted(binary_id) is not None:
                logger.warning(
                    "plugin %s: unload interrupted; its generation was purged", binary_id
                )
            raise

    async def _confirm(self, detached: DetachedPlugin | UnloadReport) -> UnloadReport:
        if isinstance(detached, UnloadReport):  # a process plugin: its process has exited
            self.unload_reports.append(detached)
            return detached
        report = await confirm_unload(detached)
        residue = self._residue(detached)
        if residue:
            logger.warning(
                "plugin %s: generation %s left running after its unload:\n  %s",
                detached.binary_id,
                detached.generation[:12],
                "\n  ".join(residue),
            )
            report = dataclasses.replace(report, survivors=(*residue, *report.survivors))
        self.unload_reports.append(report)
        return report

    def _residue(self, detached: DetachedPlugin) -> list[str]:
        """Threads, files and child processes the unloaded generation left running."""
        baseline = self._baselines.pop(detached.generation, None)
        if baseline is None:
            return []
        server = getattr(self._trials, "server_pid", None)
        return find_residue(
            self._state.generations_dir / detached.generation,
            baseline,
            own_children={server} if isinstance(server, int) else (),
            kill_children=not self._active,
        )

    # -- manifest and state ---------------------------------------------------------------------

    def record_error(self, binary_id: str, source: str, error: str) -> None:
        """Record a failure that happened before a wheel existed (a compile error).

        A serving plugin's record stays active and carries ``error``; otherwise the
        plugin is recorded as failed with ``source`` in place of the wheel.
        """
        self._book.failed(binary_id, Path(source), None, error, serving=binary_id in self._active)

    def _verify(self, wheel: Path) -> VerifiedWheel:
        if self._strict:
            check_directory(self._state.path, "state directory")
        return verify_wheel(wheel, strict_permissions=self._strict)

    def _failed(
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
        status: PluginStatus = "failed"
        if isinstance(exc, PluginQuarantined):
            status = "quarantined"
        elif isinstance(exc, (InvalidWheel, InsecurePath, UntrustedWheel)):
            status = "rejected"
        self._book.failed(key, wheel, verified, str(exc), serving=serving, status=status)
        self._gc()

    def _gc(self) -> None:
        keep = {a.generation.id for a in self._active.values()} | self._ahead
        try:
            removed = self._state.gc_generations(keep)
        except OSError as exc:
            logger.warning("could not garbage-collect old generations: %s", exc)
            return
        if removed:
            logger.debug(
                "removed %d old generation(s): %s", len(removed), ", ".join(r[:12] for r in removed)
            )


def _config_ids(active: ActivePlugin | ProcessActive) -> list[str]:
    if isinstance(active, ProcessActive):
        return active.config_ids()
    return active.resolver.config_ids()


async def _stop_process_plugin(active: ProcessActive) -> UnloadReport:
    """Unload a process plugin: its child exits, so nothing of it can survive here."""
    started = time.perf_counter()
    await active.plugin.stop()
    return UnloadReport(
        active.binary_id,
        active.generation.id,
        (),
        (),
        (),
        0,
        (time.perf_counter() - started) * 1000,
    )
