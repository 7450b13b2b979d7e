"""Process-plugin fixtures: a real host bus and real child processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controllerbus.bus import Bus, LoadControllerWithConfig, wait_exec_controller_running
from controllerbus.core import new_core_bus
from controllerbus.ipc.host import ProcessPlugin, remote_config_class

PLUGINS = Path(__file__).parent / "plugins"
if str(PLUGINS) not in sys.path:
    # The host must know the directive and value classes the tests send and expect.
    sys.path.insert(0, str(PLUGINS))


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    host_bus, _ = new_core_bus()
    yield host_bus
    await host_bus.aclose()


MakePlugin = Callable[..., ProcessPlugin]


@pytest.fixture
async def make_plugin(bus: Bus) -> AsyncIterator[MakePlugin]:
    made: list[ProcessPlugin] = []

    def make(entry_point: str = "ipc_echo:PLUGIN", **kwargs: Any) -> ProcessPlugin:
        kwargs.setdefault("binary_id", entry_point.partition(":")[0])
        plugin = ProcessPlugin(
            bus, python=sys.executable, entry_point=entry_point, sys_path=[str(PLUGINS)], **kwargs
        )
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        await plugin.stop()


async def start_controller(bus: Bus, config_id: str, **fields: Any) -> Any:
    """LoadControllerWithConfig for a config the host only knows by id; returns the ref."""
    config = remote_config_class(config_id)(**fields)
    async with asyncio.timeout(20):
        _ctrl, _inst, ref = await wait_exec_controller_running(
            bus, LoadControllerWithConfig(config)
        )
    return ref


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"
