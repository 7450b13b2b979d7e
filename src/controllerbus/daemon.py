"""The daemon: run the controllers of a config set until told to stop (BUS.md 7, Daemon).

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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controllerbus._fs import write_atomic
from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import LoadControllerWithConfig
from controllerbus.bus.executor import ControllerFailed, wait_exec_controller_running
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import AttachedValue, DirectiveInstance, Factory, Reference
from controllerbus.bus.resolver import StaticResolver
from controllerbus.configset import (
    ApplyConfigSet,
    ConfigSet,
    ConfigSetConfig,
    ConfigSetState,
    RawControllerConfig,
    config_set_to_yaml,
    guess_format,
    parse_document,
    resolve_config_set,
)
from controllerbus.core import new_core_bus
from controllerbus.errors import ConfigError, LoaderError
from controllerbus.example import boilerplate, hello_probe
from controllerbus.loader.filesystem import (
    FilesystemLoaderConfig,
    FilesystemLoaderController,
    new_filesystem_loader_factory,
)
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir

if TYPE_CHECKING:
    from controllerbus.hot import Handoff, HotReloader, HotTarget, ReloadEvent

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_DIR",
    "ConfigSetApplier",
    "DaemonOptions",
    "DaemonSession",
    "daemon_session",
    "read_config_document",
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
        hot: plugin projects to compile, watch and hot-reload (one wheel each).
        on_reload: called with every hot build (the demo prints them).
    """

    config_path: Path | None = None
    write_config: bool = False
    plugins_dir: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    watch: bool = True
    hot: tuple[HotTarget, ...] = ()
    on_reload: Callable[[ReloadEvent], object] | None = None


async def read_config_document(
    path: Path, *, write_config: bool = False
) -> dict[str, RawControllerConfig]:
    """Read the config-set file's envelope (types are resolved later, on the bus).

    Raises:
        ConfigError: the file is missing (without ``write_config``) or malformed.
    """
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        if not write_config:
            raise ConfigError(
                f"cannot find config at {path}: create it, pass -c with another file,"
                " or pass --write-config to start from an empty one"
            ) from None
        data = b""
    except OSError as exc:
        raise ConfigError(f"cannot read config at {path}: {exc.strerror}") from exc
    return parse_document(data, fmt=guess_format(path), source=str(path))


def _log_state(_inst: DirectiveInstance, av: AttachedValue) -> None:
    state = av.value
    if not isinstance(state, ConfigSetState):
        return
    if state.error is not None:
        logger.error("config set key %s: controller failed: %s", state.id, state.error)
    elif state.controller is not None:
        info = state.controller.get_controller_info()
        logger.info("config set key %s: running %s@%s", state.id, info.id, info.version)


class ConfigSetApplier:
    """Keeps one ``ApplyConfigSet`` on the bus for a config-set document.

    :meth:`apply` types the document against the factories on the bus now and
    swaps the directive: keys whose config is unchanged keep running; keys whose
    config *class* changed (a reloaded plugin) restart on the new code.
    """

    def __init__(self, bus: Bus, raw: Mapping[str, RawControllerConfig], source: str) -> None:
        self._bus = bus
        self._raw = dict(raw)
        self._source = source
        self._ref: Reference | None = None
        self._closed = False

    async def apply(self, *, strict: bool) -> ConfigSet:
        """Type and apply the document; returns the typed set (for ``--write-config``).

        Args:
            strict: report unknown config ids as errors (at start-up); otherwise skip
                them (their plugin may be loading, or failed to load).

        Raises:
            ConfigSetError: with ``strict``, any problem; otherwise invalid entries.
        """
        typed = await resolve_config_set(
            self._bus, self._raw, source=self._source, skip_unknown=not strict
        )
        if self._closed:
            return typed
        pushed = asyncio.get_running_loop().create_future()
        seen: set[str] = set()

        def added(inst: DirectiveInstance, av: AttachedValue) -> None:
            _log_state(inst, av)
            if isinstance(av.value, ConfigSetState):
                seen.add(av.value.id)
            if len(seen) >= len(typed) and not pushed.done():
                pushed.set_result(None)

        _inst, ref = self._bus.add_directive(ApplyConfigSet(typed), CallbackHandler(added))
        old, self._ref = self._ref, ref
        if typed:
            # Every key has been pushed to the config-set controller once each has
            # reported a state; only then may the old set go (or keys would restart).
            try:
                async with asyncio.timeout(10):
                    await pushed
            except TimeoutError:
                logger.warning("config set: not every key reported a state within 10 s")
        if old is not None:
            old.release()
        return typed

    async def refresh(self) -> None:
        """Re-type after a plugin change (the ``PluginHost`` ``on_change`` hook)."""
        if self._ref is None or self._closed:
            return
        try:
            await self.apply(strict=False)
        except ConfigError as exc:
            logger.error("config set could not be re-applied after a plugin change: %s", exc)

    def close(self) -> None:
        """Release the directive: every key's controller stops."""
        self._closed = True
        if self._ref is not None:
            self._ref.release()
            self._ref = None


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
    bus, static = new_core_bus([boilerplate.new_factory, hello_probe.new_factory, *factories])
    applier = ConfigSetApplier(bus, document, str(config_path))
    host = reloader = None
    strict = True
    async with bus, contextlib.AsyncExitStack() as stack:
        _ctrl, _inst, cs_ref = await wait_exec_controller_running(
            bus, LoadControllerWithConfig(ConfigSetConfig())
        )
        stack.callback(cs_ref.release)
        if options.plugins_dir is not None or options.hot:
            from controllerbus.hot import Handoff

            state = stack.enter_context(StateDir(options.state_dir))
            handoff = Handoff()
            host = PluginHost(bus, state, on_change=applier.refresh, handoff=handoff)
            stack.push_async_callback(host.aclose)
            if options.plugins_dir is not None:
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


@dataclass(eq=False, slots=True)
class _PluginLoader:
    host: PluginHost
    controller: FilesystemLoaderController
    ref: Reference

    async def stop(self) -> None:
        """Release the loader's directive and wait until it has unloaded every plugin."""
        self.ref.release()
        try:
            async with asyncio.timeout(60):
                await self.controller.stopped.wait()
        except TimeoutError:
            logger.error("plugins were still unloading after 60 s: %s", self.host.active())


async def _start_plugin_loader(
    bus: Bus, static: StaticResolver, host: PluginHost, options: DaemonOptions
) -> _PluginLoader:
    assert options.plugins_dir is not None
    static.add_factory(new_filesystem_loader_factory(host))
    directive = LoadControllerWithConfig(
        FilesystemLoaderConfig(dir=str(options.plugins_dir), watch=options.watch)
    )
    try:
        ctrl, _inst, ref = await wait_exec_controller_running(bus, directive)
    except ControllerFailed as exc:
        raise LoaderError(f"cannot start the plugin loader: {exc}") from exc
    assert isinstance(ctrl, FilesystemLoaderController)
    await ctrl.synced.wait()
    loaded = host.active()
    logger.info(
        "plugins dir %s: %d plugin(s) active%s",
        options.plugins_dir,
        len(loaded),
        f": {', '.join(loaded)}" if loaded else "",
    )
    return _PluginLoader(host, ctrl, ref)
