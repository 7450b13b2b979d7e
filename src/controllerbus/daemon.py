"""The daemon: run the controllers of a config set until told to stop (BUS.md 7, Daemon).

:func:`run_daemon` is what ``cbus daemon`` runs; it is a plain coroutine so tests
and embedding hosts can drive it with their own stop event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from controllerbus._fs import write_atomic
from controllerbus.bus.bus import Bus
from controllerbus.bus.directives import LoadControllerWithConfig
from controllerbus.bus.executor import wait_exec_controller_running
from controllerbus.bus.helpers import CallbackHandler
from controllerbus.bus.protocols import AttachedValue, DirectiveInstance, Factory
from controllerbus.configset import (
    ApplyConfigSet,
    ConfigSet,
    ConfigSetConfig,
    ConfigSetState,
    config_set_to_yaml,
    guess_format,
    unmarshal_config_set,
)
from controllerbus.core import new_core_bus
from controllerbus.errors import ConfigError
from controllerbus.example import boilerplate

__all__ = ["DEFAULT_CONFIG", "DaemonOptions", "load_config_file", "run_daemon"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("controllerbus_daemon.yaml")


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """What the daemon runs.

    Attributes:
        config_path: the config-set file (YAML, or JSON by ``.json`` suffix).
        write_config: create the file if missing, and write the parsed set back.
    """

    config_path: Path = DEFAULT_CONFIG
    write_config: bool = False


async def load_config_file(bus: Bus, path: Path, *, write_config: bool = False) -> ConfigSet:
    """Read and type the config set at ``path``; with ``write_config`` write it back as YAML.

    Raises:
        ConfigError: the file is missing (without ``write_config``) or invalid.
    """
    config_set: ConfigSet = {}
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
    await unmarshal_config_set(
        bus, data, config_set, overwrite=True, fmt=guess_format(path), source=str(path)
    )
    if write_config:
        await asyncio.to_thread(write_atomic, path, config_set_to_yaml(config_set).encode())
        logger.info("wrote config set with %d keys to %s", len(config_set), path)
    return config_set


def _log_state(_inst: DirectiveInstance, av: AttachedValue) -> None:
    state = av.value
    if not isinstance(state, ConfigSetState):
        return
    if state.error is not None:
        logger.error("config set key %s: controller failed: %s", state.id, state.error)
    elif state.controller is not None:
        info = state.controller.get_controller_info()
        logger.info("config set key %s: running %s@%s", state.id, info.id, info.version)


async def run_daemon(
    options: DaemonOptions,
    stop: asyncio.Event,
    *,
    factories: Iterable[Factory | Callable[[Bus], Factory]] = (),
) -> None:
    """Run the config set's controllers until ``stop`` is set, then shut down cleanly.

    Raises:
        ConfigError: the config set is missing or invalid (nothing is left running).
    """
    bus, _static = new_core_bus([boilerplate.new_factory, *factories])
    async with bus:
        _ctrl, _inst, cs_ref = await wait_exec_controller_running(
            bus, LoadControllerWithConfig(ConfigSetConfig())
        )
        config_set = await load_config_file(
            bus, options.config_path, write_config=options.write_config
        )
        logger.info("applying config set %s (%d keys)", options.config_path, len(config_set))
        _apply, apply_ref = bus.add_directive(
            ApplyConfigSet(config_set), CallbackHandler(on_added=_log_state)
        )
        await stop.wait()
        logger.info("shutting down")
        apply_ref.release()
        cs_ref.release()
    logger.info("stopped")
