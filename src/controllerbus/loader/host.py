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

The host is the pipeline; its steps live beside it: :mod:`~controllerbus.loader.prechecks`
(pure checks before install), :mod:`~controllerbus.loader.process_load` (the
process-isolation path), :mod:`~controllerbus.loader.switch` (activation under the
crash guard, rollback, crash recovery), :mod:`~controllerbus.loader.unload_check`
(residue of an unload) and :mod:`~controllerbus.loader.load_result`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from controllerbus.ipc.host import ProcessPlugin
from controllerbus.ipc.loading import Isolation, ProcessActive
from controllerbus.ipc.spare import SparePool
from controllerbus.loader.activation import (
    ActivePlugin,
    DetachedPlugin,
    UnloadReport,
    confirm_unload,
    deactivate,
    entry_point_of,
)
from controllerbus.loader.ahead import TrialsAhead
from controllerbus.loader.crashguard import ActivationGuard
from controllerbus.loader.errors import LoaderError, PluginPrepareError, PluginRestoreError
from controllerbus.loader.generation import (
    Generation,
    apply_install,
    finish_install,
    generation_id_of,
    plan_install,
)
from controllerbus.loader.load_result import LoadResult, Phases, in_process_loaded
from controllerbus.loader.manifest import Manifest, ManifestBook, ManifestRecord, wheel_key
from controllerbus.loader.permissions import check_directory
from controllerbus.loader.plugin_resolver import StateHandoff
from controllerbus.loader.prechecks import check_host, failure_status, refuse_quarantined
from controllerbus.loader.process_load import (
    config_ids,
    isolation_of,
    process_loaded,
    start_process,
    stop_process,
)
from controllerbus.loader.production import LoadPolicy, install_all_ahead
from controllerbus.loader.residue import record_thread_origins
from controllerbus.loader.sandbox import DEFAULT_LIMITS, TrialLimits
from controllerbus.loader.switch import Switch
from controllerbus.loader.trial import TrialRunner, default_trial_runner
from controllerbus.loader.unload_check import with_residue
from controllerbus.loader.verify import VerifiedWheel, verify_wheel

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.loader.state import StateDir

__all__ = ["LoadResult", "PluginHost", "UnloadReport"]

logger = logging.getLogger(__name__)


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
        self._stop_timeout = stop_timeout
        self._active: dict[str, ActivePlugin | ProcessActive] = {}
        self._lock = asyncio.Lock()
        self._recorded = asyncio.Event()
        self.unload_reports: deque[UnloadReport] = deque(maxlen=32)
        """The most recent unload reports (reloads included), oldest first."""
        self._book = ManifestBook(state.path, on_write=self._on_record)
        self._switch = Switch(bus, self._guard, self._book, state.path, handoff)
        self._switch.recover_crash()

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
        phases = Phases(started)
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
            refuse_quarantined(crash, key, wheel, verified, self._state.path)
            isolation = self._isolation_of(key, verified)
            if isolation == "inprocess":  # a process plugin may conflict with the host
                check_host(self._policy, verified, key, old_generation, deps)
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
            active = self._switch.activate(generation, key, ep_value)
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
        await self._changed({*old_ids, *config_ids(active)})
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
        return in_process_loaded(key, active, generation, load_ms, replaced, phases)

    def _unchanged(self, binary_id: str) -> LoadResult:
        active = self._active[binary_id]
        return LoadResult(
            binary_id,
            active.binary_version,
            active.generation.id,
            tuple(config_ids(active)),
            0.0,
            reused=True,
            unchanged=True,
        )

    def _isolation_of(self, binary_id: str, verified: VerifiedWheel) -> Isolation:
        return isolation_of(
            binary_id, verified, default=self._isolation, overrides=self._isolation_overrides
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
        plugin = await start_process(
            self._bus, generation, key, ep_value, spares=self.spares, options=self._process_options
        )
        detached = await self._deactivate(key) if key in self._active else None
        plugin.begin()
        old_ids = self._retired_ids.pop(key, ())
        self._active[key] = ProcessActive(key, generation, plugin)
        plugin.on_change = lambda p: self._book.process_changed(key, p.status.as_dict())
        await self._changed({*old_ids, *config_ids(self._active[key])})
        replaced = await self._confirm(detached) if detached is not None else None
        load_ms = (time.perf_counter() - started) * 1000
        served = sorted(f.config_id for f in plugin.factories)
        self._book.loaded(
            verified,
            binary_id=key,
            binary_version=plugin.binary_version,
            wheel=verified.path,
            generation=generation.id,
            factories=served,
            load_ms=load_ms,
            leaks=replaced.survivors if replaced is not None else (),
            process=plugin.status.as_dict(),
        )
        self._gc()
        return process_loaded(key, plugin, generation, served, load_ms, replaced)

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

    def _rollback(self, binary_id: str, old: Generation) -> bool:
        """Activate ``old`` again after a failed switch; ``True`` if it serves again."""
        restored = self._switch.rollback(binary_id, old)
        if restored is None:
            return False
        self._active[binary_id] = restored
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
        self._retired_ids[binary_id] = tuple(config_ids(self._active[binary_id]))
        if isinstance(self._active.get(binary_id), ProcessActive):
            return await stop_process(self._active.pop(binary_id))  # type: ignore[arg-type]
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
            report = detached
        else:
            report = await confirm_unload(detached)
            server = getattr(self._trials, "server_pid", None)
            report = with_residue(
                report,
                self._switch.baselines.pop(detached.generation, None),
                self._state.generations_dir / detached.generation,
                own_children={server} if isinstance(server, int) else (),
                kill_children=not self._active,
            )
        self.unload_reports.append(report)
        return report

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
        status = failure_status(exc)
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
