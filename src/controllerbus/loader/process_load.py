"""The process-isolation load path: where a plugin runs, and its child's start and stop.

A plugin whose isolation is ``"process"`` (docs/ipc.md) runs in a child process of
its generation's interpreter. Its child's start is the reload's trial: a plugin that
cannot import never gets that far, and the old generation keeps serving.
:class:`~controllerbus.loader.host.PluginHost` calls these helpers; the bookkeeping
of its active set and manifest stays with the host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controllerbus.ipc.host import ProcessPlugin, ProcessPluginError
from controllerbus.ipc.loading import (
    Isolation,
    ProcessActive,
    declared_isolation,
    process_plugin_for,
    resolve_isolation,
)
from controllerbus.loader.activation import ActivePlugin, UnloadReport
from controllerbus.loader.errors import LoaderError, PluginPrepareError
from controllerbus.loader.load_result import LoadResult

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus
    from controllerbus.ipc.spare import SparePool
    from controllerbus.loader.generation import Generation
    from controllerbus.loader.verify import VerifiedWheel

__all__ = ["config_ids", "isolation_of", "process_loaded", "start_process", "stop_process"]

logger = logging.getLogger(__name__)


def isolation_of(
    binary_id: str,
    verified: VerifiedWheel,
    *,
    default: Isolation,
    overrides: Mapping[str, Isolation],
) -> Isolation:
    """Where ``binary_id`` runs: its override, else its metadata's choice, else ``default``."""
    try:
        declared = declared_isolation(verified, binary_id)
    except ValueError as exc:
        raise LoaderError(f"plugin {binary_id}: {exc}") from None
    return resolve_isolation(binary_id, declared, default=default, overrides=overrides)


async def start_process(
    bus: Bus,
    generation: Generation,
    key: str,
    ep_value: str,
    *,
    spares: SparePool,
    options: Mapping[str, Any],
) -> ProcessPlugin:
    """Start (prepare) the child of a new generation; it serves only after ``begin()``.

    Raises:
        PluginPrepareError: the child did not get ready (its trial failed).
    """
    plugin = process_plugin_for(bus, generation, key, ep_value, spares=spares, **options)
    try:
        await plugin.prepare()
    except ProcessPluginError as exc:
        raise PluginPrepareError(key, generation.wheel.path, str(exc)) from None
    return plugin


def process_loaded(
    key: str,
    plugin: ProcessPlugin,
    generation: Generation,
    served: list[str],
    load_ms: float,
    replaced: UnloadReport | None,
) -> LoadResult:
    """Log a process plugin now serving; its :class:`LoadResult`."""
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
        tuple(served),
        load_ms,
        reused=generation.reused,
        replaced=replaced,
    )


def config_ids(active: ActivePlugin | ProcessActive) -> list[str]:
    """The config ids an active plugin (in-process or child) serves."""
    if isinstance(active, ProcessActive):
        return active.config_ids()
    return active.resolver.config_ids()


async def stop_process(active: ProcessActive) -> UnloadReport:
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
