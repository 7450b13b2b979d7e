"""Process isolation through the plugin host: real wheels, generations and children."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controllerbus.bus import Bus, exec_one_off
from controllerbus.core import new_core_bus
from controllerbus.example.boilerplate import Boilerplate
from controllerbus.ipc.codec import ForeignValue
from controllerbus.loader.errors import LoaderError, PluginPrepareError
from controllerbus.loader.generation import DURABLE_MARKER
from controllerbus.loader.host import PluginHost
from controllerbus.loader.manifest import read_manifest
from controllerbus.loader.state import StateDir
from tests.helpers import eventually
from tests.loader.wheelkit import build_wheel

from .conftest import alive, start_controller

pytestmark = pytest.mark.slow

PLUGIN_SOURCE = '''
"""A process plugin that reports which ``click`` it imports."""

import os
from dataclasses import dataclass
from typing import ClassVar

import click

from controllerbus.bus import Config, ControllerFactory, ControllerInfo
from controllerbus.example.boilerplate import Boilerplate
from controllerbus.plugin import StaticPlugin


class OldConfig(Config):
    CONFIG_ID: ClassVar[str] = "test/ipc/old/1"
    greeting: str = "hi"


@dataclass(frozen=True, slots=True)
class VersionReport:
    greeting: str
    click: str
    pid: int
    generation: str


class _Resolver:
    def __init__(self, greeting):
        self._greeting = greeting

    async def resolve(self, handler):
        handler.add_value(
            VersionReport(self._greeting, click.__version__, os.getpid(), "{generation}")
        )


class OldController:
    def __init__(self, config, opts):
        self._config = config

    def get_controller_info(self):
        return ControllerInfo(OldConfig.CONFIG_ID, "0.0.1")

    async def execute(self):
        return None

    def handle_directive(self, inst):
        if isinstance(inst.get_directive(), Boilerplate):
            return [_Resolver(self._config.greeting)]
        return []

    def close(self):
        pass


PLUGIN = StaticPlugin(
    "ipc-old",
    "{generation}",
    lambda bus: [ControllerFactory(OldConfig, OldController, version="0.0.1")],
)
{extra}
'''


def make_wheel(
    root: Path,
    *,
    generation: str,
    declare: str | None = None,
    extra: str = "",
    conflict: bool = True,
) -> Path:
    """A plugin wheel shipping its own ``click`` 7.0 (the host requires >= 8.1).

    With ``conflict=False`` it ships no ``click`` and requires nothing (loads in-process).

    ``click`` because the child's own runtime does not import it: packages the
    child runtime imports (pydantic, packaging, PyYAML) must stay compatible.
    """
    project = root / f"project-{generation}"
    src = project / "src"
    (src / "cbus_ipc_old").mkdir(parents=True)
    source = PLUGIN_SOURCE.format(generation=generation, extra=extra)
    if conflict:
        (src / "click").mkdir()
        (src / "click" / "__init__.py").write_text('__version__ = "7.0"\n')
    else:  # no vendored click: report the host's without its deprecated __version__
        source = source.replace("click.__version__", '"host"')
    (src / "cbus_ipc_old" / "__init__.py").write_text(source)
    isolation = (
        f'[project.entry-points."controllerbus.isolation"]\nipc-old = "{declare}"\n'
        if declare
        else ""
    )
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "cbus-ipc-old"
            version = "1.0.{len(generation)}+cbus.{generation}"
            requires-python = ">=3.11"
            dependencies = [{'"click==7.0"' if conflict else ""}]

            [project.entry-points."controllerbus.plugins"]
            ipc-old = "cbus_ipc_old:PLUGIN"

            {isolation}
            [tool.hatch.build.targets.wheel]
            packages = ["src/cbus_ipc_old"{', "src/click"' if conflict else ""}]
            """
        )
    )
    return build_wheel(project, root / f"dist-{generation}")


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[tuple[Bus, PluginHost]]:
    bus, _ = new_core_bus()
    with StateDir(tmp_path / "state") as state:
        plugin_host = PluginHost(
            bus,
            state,
            isolation="process",
            process_options={"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0},
        )
        yield bus, plugin_host
        await plugin_host.aclose()
    await bus.aclose()


async def _report(bus: Bus, message: str) -> dict[str, Any]:
    """The plugin's VersionReport, as data: the host has no such class."""
    async with asyncio.timeout(20):
        av, ref = await exec_one_off(bus, Boilerplate(message))
    ref.release()
    assert av is not None
    assert isinstance(av.value, ForeignValue)
    assert av.value.type == "cbus_ipc_old:VersionReport"
    assert isinstance(av.value.data, dict)
    return av.value.data


async def test_conflicting_dependency_serves_from_a_process_and_is_refused_in_process(
    tmp_path: Path, host: tuple[Bus, PluginHost]
) -> None:
    bus, plugin_host = host
    wheel = make_wheel(tmp_path, generation="aaaa")
    result = await plugin_host.load(wheel)
    assert result.factories == ("test/ipc/old/1",)
    # The deferred finish (bytecode, fsync) ran on the process path too: reusable.
    generation_dir = tmp_path / "state" / "generations" / result.generation
    assert (generation_dir / DURABLE_MARKER).is_file()
    record = plugin_host.manifest.get("ipc-old")
    assert record is not None
    assert record.isolation == "process"
    assert record.pid is not None
    assert alive(record.pid)
    ref = await start_controller(bus, "test/ipc/old/1", greeting="hello")
    report = await _report(bus, "which click?")
    assert report == {
        "greeting": "hello",
        "click": "7.0",
        "pid": record.pid,
        "generation": "aaaa",
    }
    assert importlib.metadata.version("click") != "7.0"  # the host's own is untouched
    ref.release()

    # The same wheel in-process: the host-dependency check refuses it, clearly.
    bus2, _ = new_core_bus()
    with StateDir(tmp_path / "state2") as state2:
        inproc = PluginHost(bus2, state2)
        with pytest.raises(LoaderError, match="click"):
            await inproc.load(wheel)
        await inproc.aclose()
    await bus2.aclose()


async def test_plugin_metadata_chooses_process_isolation(tmp_path: Path) -> None:
    bus, _ = new_core_bus()
    with StateDir(tmp_path / "state") as state:
        plugin_host = PluginHost(bus, state)  # default in-process
        await plugin_host.load(make_wheel(tmp_path, generation="meta", declare="process"))
        plugin = plugin_host.process_plugin("ipc-old")
        assert plugin is not None
        assert plugin.status.pid != os.getpid()
        await plugin_host.aclose()
        assert plugin.status.state == "stopped"
    await bus.aclose()


async def test_reload_with_syntax_error_keeps_the_old_child_serving_then_a_good_one_replaces_it(
    tmp_path: Path, host: tuple[Bus, PluginHost]
) -> None:
    bus, plugin_host = host
    await plugin_host.load(make_wheel(tmp_path, generation="good1"))
    old = plugin_host.process_plugin("ipc-old")
    assert old is not None
    old_pid = old.status.pid
    assert old_pid is not None
    ref = await start_controller(bus, "test/ipc/old/1")
    assert (await _report(bus, "before"))["generation"] == "good1"

    # A syntax error is caught by the trial import (the fast install byte-compiles only
    # after the switch), an import error when the new child starts (before the old one
    # is stopped). Either way the old child serves on.
    bad_wheels = [
        (
            make_wheel(tmp_path, generation="bad22", extra="def broken(:\n    pass\n"),
            LoaderError,
            "SyntaxError: invalid syntax",
        ),
        (
            make_wheel(
                tmp_path, generation="bad4444", extra="raise RuntimeError('boom at import')\n"
            ),
            PluginPrepareError,
            "boom at import",
        ),
    ]
    for bad, error, why in bad_wheels:
        with pytest.raises(error, match=why):
            await plugin_host.load(bad)
        record = plugin_host.manifest.get("ipc-old")
        assert record is not None
        assert record.status == "active"
        assert record.pid == old_pid
        assert record.error is not None
        assert why in record.error
        assert alive(old_pid)
        assert (await _report(bus, f"during {why}"))["pid"] == old_pid

    await plugin_host.load(make_wheel(tmp_path, generation="good333"))
    new = plugin_host.process_plugin("ipc-old")
    assert new is not None
    assert new.status.pid not in (None, old_pid)
    await eventually(lambda: not alive(old_pid), within=10)
    # The held LoadControllerWithConfig is re-resolved by the new generation.
    report = await _report(bus, "after")
    assert report["generation"] == "good333"
    assert report["pid"] == new.status.pid
    ref.release()


async def test_kill_9_of_the_child_is_in_the_manifest(
    tmp_path: Path, host: tuple[Bus, PluginHost]
) -> None:
    bus, plugin_host = host
    await plugin_host.load(make_wheel(tmp_path, generation="kill"))
    ref = await start_controller(bus, "test/ipc/old/1")
    first = plugin_host.manifest.get("ipc-old")
    assert first is not None
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)

    def restarted() -> bool:
        on_disk = read_manifest(plugin_host._state.path).get("ipc-old")
        return on_disk is not None and on_disk.restarts == 1 and on_disk.pid is not None

    await eventually(restarted, within=30)
    on_disk = read_manifest(plugin_host._state.path).get("ipc-old")
    assert on_disk is not None
    assert on_disk.pid != first.pid
    assert on_disk.last_exit == "child exited (killed by SIGKILL)"
    assert (await _report(bus, "again"))["pid"] == on_disk.pid
    ref.release()
