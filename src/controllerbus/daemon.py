"""The daemon: run the controllers of a config set until told to stop (docs/bus.md#daemon).

:func:`run_daemon` is what ``cbus daemon`` runs; it is a plain coroutine so tests
and embedding hosts can drive it with their own stop event. With a plugins
directory it also runs the filesystem loader: plugins are loaded before the config
set is read (so their config ids are known), and after every plugin change the
config set is typed again, so keys served by a reloaded plugin restart on the new
generation and the old generation's config objects go away.

With hot targets (``cbus daemon --hot DIR``) the daemon compiles plugin projects
itself and reloads them on every save (:mod:`controllerbus.hot`); controllers'
state is carried across reloads. Without ``-c`` the daemon uses
``./controllerbus_daemon.yaml`` if present, else the first hot target's own
``controllerbus_daemon.yaml``, else runs with no config-set controllers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from controllerbus._fs import write_atomic
from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import LoadControllerWithConfig
from controllerbus.bus.executor import wait_exec_controller_running
from controllerbus.bus.protocols import Factory
from controllerbus.bus.resolver import StaticResolver
from controllerbus.configset import ConfigSetConfig, RawControllerConfig, config_set_to_yaml
from controllerbus.configset.applier import ConfigSetApplier, read_config_document
from controllerbus.core import new_core_bus
from controllerbus.errors import LoaderError
from controllerbus.loader.filesystem import (
    FilesystemLoaderConfig,
    new_filesystem_loader_factory,
)
from controllerbus.loader.host import PluginHost
from controllerbus.loader.production import LoadPolicy, start_index_mirror
from controllerbus.loader.running import RunningLoader
from controllerbus.loader.sandbox import DEFAULT_LIMITS, TrialLimits
from controllerbus.loader.state import StateDir
from controllerbus.loader.trust import TrustPolicy

if TYPE_CHECKING:
    from controllerbus.hot import Handoff, HotReloader, HotTarget, ReloadEvent

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_DIR",
    "DaemonOptions",
    "DaemonSession",
    "daemon_session",
    "run_daemon",
]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("controllerbus_daemon.yaml")
DEFAULT_STATE_DIR = Path(".cbus-state")


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """What the daemon runs.

    Attributes:
        config_path: the config-set file (YAML, or JSON by ``.json`` suffix);
            ``None``: not given (see the module docstring), a missing file is then
            no error.
        write_config: create the file if missing, and write the parsed set back.
        plugins_dir: a directory of plugin wheels to load (``None``: no plugins).
        state_dir: where generations and the manifest live.
        watch: re-sync the plugins directory on change.
        trust: a trust file; only wheels it pins (by sha256) load, dependencies too.
        find_links: directories of dependency wheels (default: the plugins directory).
        index_url: a PEP 503/691 simple index to mirror the trust file's wheels from
            into the plugins directory (default ``<state-dir>/wheelhouse``); needs
            ``trust``.
        index_poll: seconds between checks of the trust file for the index mirror.
        trial_limits: deadline and resource limits of every plugin's trial import.
        insecure_permissions: trust plugins/state directories and wheels that others
            could write (:mod:`~controllerbus.loader.permissions`).
        isolation: where plugins run unless their metadata says otherwise:
            ``inprocess`` (default) or ``process`` (see docs/ipc.md).
        hot: plugin projects to compile, watch and hot-reload (one wheel each).
        on_reload: called with every hot build (the demo prints them).
    """

    config_path: Path | None = None
    write_config: bool = False
    plugins_dir: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    watch: bool = True
    trial_limits: TrialLimits = DEFAULT_LIMITS
    insecure_permissions: bool = False
    isolation: Literal["inprocess", "process"] = "inprocess"
    trust: Path | None = None
    find_links: tuple[Path, ...] = ()
    index_url: str | None = None
    index_poll: float = 5.0
    hot: tuple[HotTarget, ...] = ()
    on_reload: Callable[[ReloadEvent], object] | None = None

    @property
    def wheel_dir(self) -> Path | None:
        """The plugins directory, or with an index and none given, the mirror's."""
        if self.plugins_dir is None and self.index_url is not None:
            return self.state_dir / "wheelhouse"
        return self.plugins_dir


@dataclass(frozen=True, slots=True)
class DaemonSession:
    """A running daemon: its bus and, with plugins, its plugin host (and hot reloader)."""

    bus: Bus
    host: PluginHost | None
    hot: HotReloader | None = None


@contextlib.asynccontextmanager
async def daemon_session(
    options: DaemonOptions,
    *,
    factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
) -> AsyncIterator[DaemonSession]:
    """Start the daemon's bus, plugins and config set; stop all of it on exit.

    Raises:
        ConfigError: the config set is missing or invalid.
        LoaderError: the plugins directory or state directory cannot be used.
        (Nothing is left running in either case.)
    """
    config_path = _config_source(options)
    if config_path is None:
        document: dict[str, RawControllerConfig] = {}
        logger.info("no config set (no -c, no controllerbus_daemon.yaml): no controllers from one")
    else:
        document = await read_config_document(config_path, write_config=options.write_config)
    bus, static = new_core_bus(factories)
    applier = ConfigSetApplier(bus, document, str(config_path))
    host = reloader = None
    strict = True
    async with bus, contextlib.AsyncExitStack() as stack:
        _ctrl, _inst, cs_ref = await wait_exec_controller_running(
            bus, LoadControllerWithConfig(ConfigSetConfig())
        )
        stack.callback(cs_ref.release)
        if options.index_url is not None and options.trust is None:
            raise LoaderError(
                "--index-url needs --trust FILE: wheels from an index load only when pinned"
            )
        if options.hot and options.trust is not None:
            raise LoaderError(
                "--hot and --trust cannot be combined: --hot builds a new wheel from your"
                " sources on every save, which no trust file can pin in advance; use --hot"
                " in development and --trust with --plugins-dir in production"
            )
        if options.wheel_dir is not None or options.hot:
            from controllerbus.hot import Handoff

            state = stack.enter_context(StateDir(options.state_dir))
            if options.index_url is not None:
                assert options.wheel_dir is not None
                mirror = await start_index_mirror(
                    options.index_url,
                    TrustPolicy(options.trust or Path()),
                    options.wheel_dir,
                    poll=options.index_poll,
                )
                stack.push_async_callback(_cancel, mirror)
            handoff = Handoff()
            if options.insecure_permissions:
                logger.warning("permission checks are off (--insecure-permissions)")
            wheel_dir = options.wheel_dir
            default_links = (wheel_dir,) if wheel_dir is not None else ()
            policy = LoadPolicy.of(
                options.trust, options.find_links or default_links, (state.path,)
            )
            host = PluginHost(
                bus,
                state,
                on_config_ids_changed=applier.refresh_config_ids,
                limits=options.trial_limits,
                insecure_permissions=options.insecure_permissions,
                policy=policy,
                isolation=options.isolation,
                handoff=handoff,
            )
            stack.push_async_callback(host.aclose)
            if options.wheel_dir is not None:
                loader = await _start_plugin_loader(bus, static, host, options)
                stack.push_async_callback(loader.stop)
            if options.hot:
                reloader = await _start_hot(host, state, handoff, options)
                stack.push_async_callback(reloader.aclose)
                # A target that failed to build: its config ids are unknown until fixed.
                strict = all(e.ok for e in reloader.events)
        stack.callback(applier.close)
        if config_path is not None:
            await _apply_initial(applier, options, config_path, strict=strict)
        yield DaemonSession(bus, host, reloader)
        logger.info("shutting down")
    logger.info("stopped")


async def run_daemon(
    options: DaemonOptions,
    stop: asyncio.Event,
    *,
    factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
) -> None:
    """Run the config set's controllers (and plugins) until ``stop`` is set.

    Raises:
        ConfigError: the config set is missing or invalid.
        LoaderError: the plugins directory or state directory cannot be used.
    """
    async with daemon_session(options, factories=factories):
        await stop.wait()


def _config_source(options: DaemonOptions) -> Path | None:
    """The config-set file to read; ``None``: run without one (see the module docstring)."""
    if options.config_path is not None:
        return options.config_path
    if options.write_config or DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    for target in options.hot:
        if (own := target.own_config) is not None:
            return own
    return None


async def _apply_initial(
    applier: ConfigSetApplier, options: DaemonOptions, config_path: Path, *, strict: bool
) -> None:
    # A function of its own so the typed set (instances of plugin classes) is not
    # kept alive by a local of run_daemon while plugins reload.
    typed = await applier.apply(strict=strict)
    logger.info("applying config set %s (%d keys)", config_path, len(typed))
    if options.write_config:
        text = config_set_to_yaml(typed)
        await asyncio.to_thread(write_atomic, config_path, text.encode())
        logger.info("wrote config set with %d keys to %s", len(typed), config_path)


async def _start_hot(
    host: PluginHost, state: StateDir, handoff: Handoff, options: DaemonOptions
) -> HotReloader:
    from controllerbus.hot import HotReloader

    reloader = HotReloader(
        host, options.hot, work_dir=state.path / "hot", handoff=handoff, on_reload=options.on_reload
    )
    await reloader.start()
    return reloader


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(eq=False, slots=True)
class _PluginLoader:
    host: PluginHost
    running: RunningLoader

    async def stop(self) -> None:
        """Release the loader's directive and wait until it has unloaded every plugin."""
        try:
            async with asyncio.timeout(60):
                await self.running.stop()
        except TimeoutError:
            logger.error("plugins were still unloading after 60 s: %s", self.host.active())


async def _start_plugin_loader(
    bus: Bus, static: StaticResolver, host: PluginHost, options: DaemonOptions
) -> _PluginLoader:
    plugins_dir = options.wheel_dir
    assert plugins_dir is not None
    static.add_factory(new_filesystem_loader_factory(host))
    directive = LoadControllerWithConfig(
        FilesystemLoaderConfig(dir=str(plugins_dir), watch=options.watch)
    )
    # Waits on whichever loader instance runs now: the bus restarts a failed one.
    loader = _PluginLoader(host, await RunningLoader.start(bus, directive))
    loaded = host.active()
    logger.info(
        "plugins dir %s: %d plugin(s) active%s",
        plugins_dir,
        len(loaded),
        f": {', '.join(loaded)}" if loaded else "",
    )
    return loader
