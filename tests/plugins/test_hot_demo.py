"""The hot-demo plugin (docs/bus.md#hot-demo-controller), compiled and loaded like a user would."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controllerbus.bus import (
    Bus,
    ControllerFailed,
    LoadControllerWithConfig,
    wait_exec_controller_running,
)
from controllerbus.compiler import CompileOptions, compile_plugin
from controllerbus.configset import lookup_config_constructor
from controllerbus.core import new_core_bus
from controllerbus.loader.host import PluginHost
from controllerbus.loader.state import StateDir

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
DEMO_ID = "controllerbus/example/hot-demo/demo-controller/1"


@pytest.fixture(scope="module")
def hot_demo_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hot-demo")
    for name in ("hot-demo", "demo-greeting"):
        shutil.copytree(PLUGINS / name, work / name)
    result = compile_plugin(
        [work / "hot-demo"],
        CompileOptions(
            output_dir=work / "dist",
            codegen_dir=work / "codegen",
            binary_id="controllerbus/examples/hot-demo/codegen-demo/1",
        ),
    )
    return result.wheel


@pytest.fixture
async def loaded(hot_demo_wheel: Path, tmp_path: Path) -> AsyncIterator[tuple[Bus, PluginHost]]:
    bus, _static = new_core_bus()
    async with bus:
        with StateDir(tmp_path / "state") as state:
            host = PluginHost(bus, state)
            await host.load(hot_demo_wheel)
            yield bus, host
            reports = await host.aclose()
    assert all(r.clean for r in reports), [r.survivors for r in reports]
    assert not [m for m in sys.modules if m.startswith("cbus_hot_demo")]


async def _demo_config(bus: Bus, exit_after: str) -> object:
    ctor = await lookup_config_constructor(bus, DEMO_ID)
    assert ctor is not None
    return type(ctor.construct()).model_validate({"exitAfterDur": exit_after})


async def test_demo_controller_loads_with_one_hour_and_yields_a_value(
    loaded: tuple[Bus, PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    bus, _host = loaded
    config = await _demo_config(bus, "1h")
    ctrl, _inst, ref = await wait_exec_controller_running(bus, LoadControllerWithConfig(config))  # type: ignore[arg-type]  # a plugin Config
    assert ctrl.get_controller_info().id == DEMO_ID
    assert ctrl.get_controller_info().version == "0.0.1"
    ref.release()
    del ctrl, config


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3s", 3.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2us", 2e-6),
        ("7ns", 7e-9),
        ("-1m", -60.0),
        ("0", 0.0),
    ],
)
async def test_go_durations(loaded: tuple[Bus, PluginHost], text: str, seconds: float) -> None:
    parse = sys.modules["cbus_hot_demo.duration"].parse_go_duration
    assert parse(text) == pytest.approx(seconds)
    del parse


@pytest.mark.parametrize("text", ["3", "3x", "s", "1h-2m", "1.2.3s"])
async def test_invalid_durations_fail_validation(loaded: tuple[Bus, PluginHost], text: str) -> None:
    bus, _host = loaded
    config = await _demo_config(bus, text)
    with pytest.raises(ControllerFailed, match="invalid duration"):
        await wait_exec_controller_running(bus, LoadControllerWithConfig(config))  # type: ignore[arg-type]  # a plugin Config
    del config
