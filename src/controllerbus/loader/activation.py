"""Put one plugin generation on the bus, take it off again, and prove it is gone.

The host's side effects on the bus, one plugin at a time (the host decides *when*;
this module does *what*):

:func:`activate`
    import the entry point with the generation's ``site-packages`` first on the path,
    check the plugin's shape, construct its factories and run a
    :class:`~controllerbus.loader.plugin_resolver.PluginResolver` for them. Whatever
    the plugin raises, the generation is purged before the error leaves.

:func:`deactivate`
    ``pre_unload()`` hook → stop the plugin's controllers (factory contexts set,
    controllers removed, their ``ExecController`` directives closed) and wait until
    their tasks have ended → remove its resolver controller → purge every module of
    the generation and the import caches. Weak references to the plugin's modules,
    classes, factories and controllers are taken first.

:func:`confirm_unload`
    garbage-collect over a few loop iterations and check those weak references;
    survivors are reported with their holders in an :class:`UnloadReport`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controllerbus.bus.directives import ExecController
from controllerbus.bus.resolver import ResolverController
from controllerbus.loader.errors import (
    InvalidPlugin,
    InvalidWheel,
    PluginFactoryError,
    PluginImportError,
)
from controllerbus.loader.plugin_resolver import ConstructHook, PluginResolver
from controllerbus.loader.purge import LeakTracker, modules_under, purge_generation
from controllerbus.loader.trial_child import describe_exception, inspect_plugin, shape_problem

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.verify import VerifiedWheel

__all__ = [
    "ActivePlugin",
    "DetachedPlugin",
    "UnloadReport",
    "activate",
    "confirm_unload",
    "deactivate",
    "entry_point_of",
]

logger = logging.getLogger(__name__)

# What plugin code may raise that the host turns into a load error. SystemExit too:
# a plugin calling sys.exit() at import must not stop the daemon.
_PLUGIN_ERRORS = (Exception, SystemExit)

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
        tracked: how many objects the leak tracker watched.
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


@dataclass(eq=False, slots=True)
class ActivePlugin:
    """A generation on the bus: its plugin object, resolver and resolver controller."""

    binary_id: str
    binary_version: str
    generation: Generation
    plugin: Any
    resolver: PluginResolver
    controller: ResolverController
    task: asyncio.Task[Any]
    loaded_at: float = field(default_factory=time.time)


@dataclass(eq=False, slots=True)
class DetachedPlugin:
    """A generation taken off the bus and purged, whose objects may still be dying."""

    binary_id: str
    generation: str
    modules: tuple[str, ...]
    tracker: LeakTracker
    stuck: tuple[str, ...]
    started: float


def entry_point_of(verified: VerifiedWheel) -> tuple[str, str]:
    """The wheel's one ``controllerbus.plugins`` entry point: ``(name, "module:attr")``.

    Raises:
        InvalidWheel: the wheel declares none or several.
    """
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


def activate(
    bus: Bus,
    generation: Generation,
    binary_id: str,
    entry_point: str,
    *,
    on_construct: ConstructHook | None = None,
) -> ActivePlugin:
    """Import ``entry_point`` (``module:attr``) and put the plugin's factories on ``bus``.

    ``on_construct`` sees every controller the plugin's factories construct (the
    state handoff restores state there).

    Synchronous. Whatever the plugin raises (``SystemExit`` included), the generation
    is purged again before the error leaves: nothing half-imported stays behind.

    Raises:
        PluginImportError / PluginFactoryError / InvalidPlugin: the plugin failed.
    """
    site = str(generation.site_packages)
    sys.path.insert(0, site)
    importlib.invalidate_caches()
    wheel = generation.wheel.path
    within = str(generation.path)
    try:
        module_name, _, attr = entry_point.partition(":")
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
            factories = list(obj.factories(bus))
        except _PLUGIN_ERRORS as exc:
            reason = describe_exception(exc, within=within)
            raise PluginFactoryError(binary_id, wheel, reason) from None
        if issues := inspect_plugin(obj, binary_id, factories):
            raise InvalidPlugin(binary_id, wheel, "; ".join(issues))
    except BaseException:
        purge_generation(generation.path)
        raise
    resolver = PluginResolver(
        bus, binary_id, obj.binary_version, factories, on_construct=on_construct
    )
    controller = ResolverController(bus, resolver)
    task = bus.run_controller(controller)
    return ActivePlugin(
        binary_id, str(obj.binary_version), generation, obj, resolver, controller, task
    )


async def deactivate(bus: Bus, active: ActivePlugin, *, stop_timeout: float) -> DetachedPlugin:
    """Stop the plugin and purge its generation; leaks are checked by :func:`confirm_unload`.

    Pass ``active`` without keeping a reference to it (``deactivate(bus,
    actives.pop(key), ...)``): a caller's reference would make the unload look like
    a leak. Safe to cancel: an interrupted unload still purges the generation.
    """
    started = time.perf_counter()
    binary_id = active.binary_id
    generation = active.generation
    tracker = _track_plugin(active)
    modules = tuple(modules_under(generation.path))
    try:
        _call_pre_unload(active)
        tasks = _stop_plugin_controllers(bus, active)
        active.resolver.release()
        # From here on nothing in this frame may refer to the plugin's objects.
        del active
        stuck = await _wait_tasks(tasks, stop_timeout)
        # Dispose callbacks and task done-callbacks run on the next loop iterations.
        for _ in range(3):
            await asyncio.sleep(0)
    except BaseException:
        purge_generation(generation.path)
        raise
    report = purge_generation(generation.path)
    return DetachedPlugin(
        binary_id, generation.id, modules or report.modules, tracker, stuck, started
    )


async def confirm_unload(detached: DetachedPlugin) -> UnloadReport:
    """Collect garbage and report what of the unloaded generation is still alive.

    Directives released by the unload (and by the host's ``on_change``) let go of the
    old objects over a few loop iterations, as their cancelled tasks finish: give
    them a short, bounded time to settle before calling anything a leak.
    """
    alive = True
    for delay in _SETTLE_DELAYS:
        alive = bool(detached.tracker.alive())
        if not alive:
            break
        await asyncio.sleep(delay)
    # survivors() collects garbage again and scans referrers: only when needed.
    survivors = tuple(str(s) for s in detached.tracker.survivors()) if alive else ()
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
        len(detached.tracker),
        unload_ms,
    )
    return UnloadReport(
        detached.binary_id,
        detached.generation,
        detached.modules,
        survivors,
        detached.stuck,
        len(detached.tracker),
        unload_ms,
    )


def _stop_plugin_controllers(bus: Bus, active: ActivePlugin) -> list[asyncio.Task[Any]]:
    tasks: list[asyncio.Task[Any]] = []
    # Controllers first: their resolvers stop before their ExecController goes away.
    tasks.extend(active.resolver.pre_plugin_unload())
    ours = {id(f) for f in active.resolver.factories()}
    for inst in bus.get_directives():
        directive = inst.get_directive()
        if isinstance(directive, ExecController) and id(directive.factory) in ours:
            tasks.extend(inst.resolver_tasks())
            inst.close()
    active.controller.close()
    tasks.extend(bus.remove_controller(active.controller))
    active.task.cancel()
    tasks.append(active.task)
    return tasks


async def _wait_tasks(tasks: Iterable[asyncio.Task[Any]], stop_timeout: float) -> tuple[str, ...]:
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return ()
    done, still = await asyncio.wait(pending, timeout=stop_timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("task %s ended with %r while unloading", task.get_name(), task.exception())
    return tuple(sorted(t.get_name() for t in still))


def _track_plugin(active: ActivePlugin) -> LeakTracker:
    """Weak references to everything of the plugin that must die with the unload."""
    tracker = LeakTracker()
    tracker.track_generation(active.generation.path)
    _track(tracker, active.plugin, f"plugin object of {active.binary_id}")
    for factory in active.resolver.factories():
        _track(tracker, factory.inner, f"factory {factory.config_id()}")
        for controller in factory.constructed():
            _track(tracker, controller, f"controller {controller.get_controller_info().id}")
    return tracker


def _call_pre_unload(active: ActivePlugin) -> None:
    hook = getattr(active.plugin, "pre_unload", None)
    if not callable(hook):
        return
    try:
        hook()
    except Exception as exc:
        logger.error(
            "plugin %s: pre_unload() raised: %s", active.binary_id, describe_exception(exc)
        )


def _track(tracker: LeakTracker, obj: object, label: str) -> None:
    try:
        tracker.track(obj, label)
    except TypeError:
        logger.debug("cannot weak-reference %s; not tracked", label)
