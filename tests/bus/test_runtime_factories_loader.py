"""Factories arriving at runtime through the loader serve directives already waiting.

Two ways factories appear while the bus runs: a factory registered in the static
resolver (the daemon adds the filesystem loader's factory after the bus started),
and a plugin loaded from a plugins directory (its own resolver controller).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from controllerbus.bus import (
    AttachedValue,
    Bus,
    CallbackHandler,
    ConfigConstructor,
    DirectiveInstance,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    StaticResolver,
    exec_one_off,
    wait_exec_controller_running,
)
from controllerbus.core import new_core_bus
from controllerbus.example.hello import Hello, HelloReply
from controllerbus.loader.filesystem import (
    FilesystemLoaderConfig,
    FilesystemLoaderController,
    new_filesystem_loader_factory,
)
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir
from tests.loader.pluginkit import PluginProjects, write_projects

if TYPE_CHECKING:
    from controllerbus.compiler import CompileResult

PREFIX = "cbt_busrt"


@contextlib.asynccontextmanager
async def hosted(tmp_path: Path) -> AsyncIterator[tuple[Bus, StaticResolver, PluginHost]]:
    bus, static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = PluginHost(bus, state)
            try:
                yield bus, static, host
            finally:
                await host.aclose()


async def eventually(pred: Callable[[], object], what: str, *, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


async def test_loader_factory_registered_later_serves_a_waiting_directive(
    tmp_path: Path,
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    async with hosted(tmp_path) as (bus, static, host):
        waiter = asyncio.create_task(
            wait_exec_controller_running(
                bus, LoadControllerWithConfig(FilesystemLoaderConfig(dir=str(plugins)))
            )
        )
        await asyncio.sleep(0.05)
        assert not waiter.done()

        static.add_factory(new_filesystem_loader_factory(host))
        ctrl, _inst, ref = await asyncio.wait_for(waiter, 10)
        assert isinstance(ctrl, FilesystemLoaderController)
        assert ctrl.directory == plugins
        await asyncio.wait_for(ctrl.synced.wait(), 10)
        ref.release()


@dataclass(frozen=True, slots=True)
class Wheels:
    projects: PluginProjects
    v1: CompileResult
    v2: CompileResult


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    root = tmp_path_factory.mktemp("busrt-plugins")
    projects = write_projects(root / "projects", PREFIX)
    v1 = projects.compile(root / "v1")
    projects.set_greeting("howdy")
    v2 = projects.compile(root / "v2")
    return Wheels(projects, v1, v2)


def drop(src: Path, dst: Path) -> Path:
    """Put a wheel into the plugins directory as a compiler does: temp name, rename."""
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


class CtorWatch:
    """Counts a ``LoadConfigConstructorByID`` directive's values without keeping them.

    Holding a plugin's constructor would pin its generation after unload.
    """

    def __init__(self) -> None:
        self.live: set[int] = set()
        self.added = 0
        self.removed = 0
        self.handler = CallbackHandler(self._added, self._removed)

    def _added(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        assert isinstance(av.value, ConfigConstructor)
        self.live.add(av.value_id)
        self.added += 1

    def _removed(self, _inst: DirectiveInstance, av: AttachedValue) -> None:
        self.live.discard(av.value_id)
        self.removed += 1


async def hello(bus: Bus, name: str) -> str:
    value, ref = await asyncio.wait_for(exec_one_off(bus, Hello(name)), 10)
    assert value is not None
    assert isinstance(value.value, HelloReply)
    text = value.value.text
    ref.release()
    return text


async def test_a_plugin_loaded_later_serves_directives_waiting_for_its_config_id(
    wheels: Wheels, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    config_id = wheels.projects.config_id
    async with hosted(tmp_path) as (bus, _static, host):
        loader = FilesystemLoaderController(host, plugins, watch=True, debounce_ms=50, step_ms=20)
        task = asyncio.create_task(loader.execute())
        try:
            await asyncio.wait_for(loader.synced.wait(), 10)
            watch = CtorWatch()
            waiter = asyncio.create_task(exec_one_off(bus, LoadConfigConstructorByID(config_id)))
            _inst, watch_ref = bus.add_directive(
                LoadConfigConstructorByID(config_id), watch.handler
            )
            await asyncio.sleep(0.05)
            assert not waiter.done()

            v1 = drop(wheels.v1.wheel, plugins / wheels.v1.wheel.name)
            ctor, ctor_ref = await asyncio.wait_for(waiter, 15)
            assert ctor is not None
            assert isinstance(ctor.value, ConfigConstructor)
            config = ctor.value.construct()
            del ctor
            ctor_ref.release()
            _ctrl, _cinst, run_ref = await asyncio.wait_for(
                wait_exec_controller_running(bus, LoadControllerWithConfig(config)), 10
            )
            del config, _ctrl, _cinst
            assert await hello(bus, "bus") == "hello, bus"
            assert (watch.added, watch.removed, len(watch.live)) == (1, 0, 1)
            run_ref.release()

            # Another version replaces it: the first one's answer is withdrawn and the
            # new one's takes its place, with never two at once.
            drop(wheels.v2.wheel, plugins / wheels.v2.wheel.name)
            v1.unlink()
            bid = wheels.projects.binary_id
            await eventually(lambda: host.active() == {bid: wheels.v2.sha256}, "v2 active")
            await eventually(lambda: watch.added == 2, "v2's constructor answers")
            assert (watch.removed, len(watch.live)) == (1, 1)
            watch_ref.release()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
