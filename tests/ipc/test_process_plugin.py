"""ProcessPlugin end to end: real child processes answering on the host bus."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import ipc_echo  # type: ignore[import-not-found]
import ipc_evil  # type: ignore[import-not-found]
import pytest

from controllerbus.bus import (
    AttachedValue,
    BackoffPolicy,
    Bus,
    CallbackHandler,
    ConstructOpts,
    ExecControllerValue,
    LoadControllerWithConfig,
    exec_collect_values,
    exec_one_off,
)
from controllerbus.example import boilerplate
from controllerbus.example.boilerplate import Boilerplate, BoilerplateResult
from controllerbus.ipc.host import ProcessPluginError, remote_config_class
from tests.helpers import eventually

from .conftest import MakePlugin, alive, start_controller

FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.5}
QUICK_BACKOFF = BackoffPolicy(initial_interval=0.05, max_interval=0.2, max_elapsed=20)


async def _echo(bus: Bus, text: str) -> ipc_echo.EchoReply:
    async with asyncio.timeout(15):
        av, ref = await exec_one_off(bus, ipc_echo.Echo(text))
    ref.release()
    assert av is not None
    value: ipc_echo.EchoReply = av.value
    return value


async def _until(predicate: Callable[[], object]) -> None:
    await eventually(predicate, within=30, step=0.02)


async def test_plugin_controllers_answer_on_the_host_bus(bus: Bus, make_plugin: MakePlugin) -> None:
    plugin = make_plugin()
    ready = await plugin.start()
    assert {f.config_id for f in ready.factories} == {
        "test/ipc/echo/1",
        "test/ipc/ask/1",
        "controllerbus/example/boilerplate/1",
    }
    pid = plugin.status.pid
    assert pid is not None
    assert pid != os.getpid()
    assert plugin.status.as_dict()["isolation"] == "process"
    ref = await start_controller(bus, "test/ipc/echo/1", prefix="re: ")
    reply = await _echo(bus, "hi")
    assert reply == ipc_echo.EchoReply("re: hi", pid)
    # A config class the host has (the boilerplate) travels too: printed_len 44 + 11.
    boiler = await start_controller(bus, "controllerbus/example/boilerplate/1", exampleField="t")
    async with asyncio.timeout(15):
        av, bref = await exec_one_off(bus, Boilerplate("hello world"))
    assert av is not None
    assert av.value == BoilerplateResult(printed_len=55)
    bref.release()
    boiler.release()
    ref.release()


async def test_a_child_controller_asks_the_host_bus(bus: Bus, make_plugin: MakePlugin) -> None:
    """Directives flow the other way too: the child's controller is answered by the host."""
    host_side = boilerplate.BoilerplateController(
        boilerplate.BoilerplateConfig(example_field="host"), ConstructOpts()
    )
    bus.run_controller(host_side)
    plugin = make_plugin()
    await plugin.start()
    ref = await start_controller(bus, "test/ipc/ask/1")
    assert (await _echo(bus, "ask")).text == "host says printed_len=58"  # 44 + 14
    assert not any(  # the child's Boilerplate was not asked back of the child
        isinstance(inst.get_directive(), Boilerplate) and len(inst.get_values()) != 1
        for inst in bus.get_directives()
    )
    ref.release()


async def test_values_stream_and_are_removed_when_the_controller_stops(
    bus: Bus, make_plugin: MakePlugin
) -> None:
    plugin = make_plugin()
    await plugin.start()
    ref = await start_controller(bus, "test/ipc/echo/1")
    removed: list[int] = []
    inst, sref = bus.add_directive(
        ipc_echo.Stream(500), CallbackHandler(on_removed=lambda _i, av: removed.append(av.value_id))
    )
    await _until(lambda: len(inst.get_values()) == 500)
    assert [av.value.n for av in inst.get_values()] == list(range(500))
    ref.release()  # the child's controller stops: its values leave the host instance
    await _until(lambda: not inst.get_values())
    assert len(removed) == 500
    sref.release()


async def test_invalid_config_is_an_error_on_the_host(bus: Bus, make_plugin: MakePlugin) -> None:
    """The child validates with the real class; the host loader sees a failed controller."""
    plugin = make_plugin()
    await plugin.start()
    config = remote_config_class("controllerbus/example/boilerplate/1").model_validate(
        {"exampleField": ""}
    )
    errors: list[str] = []

    def added(_inst: object, av: AttachedValue) -> None:
        if isinstance(av.value, ExecControllerValue) and av.value.error is not None:
            errors.append(str(av.value.error))

    _inst, ref = bus.add_directive(LoadControllerWithConfig(config), CallbackHandler(added))
    await _until(lambda: bool(errors))
    assert "invalid config: example field must be set" in errors[0]
    ref.release()


async def test_kill_9_of_the_child_restarts_it_and_directives_are_answered_again(
    bus: Bus, make_plugin: MakePlugin
) -> None:
    plugin = make_plugin(backoff=QUICK_BACKOFF, **FAST)
    await plugin.start()
    ref = await start_controller(bus, "test/ipc/echo/1", prefix="a:")
    first = (await _echo(bus, "one")).pid
    held, href = bus.add_directive(ipc_echo.Echo("held"))
    await _until(lambda: len(held.get_values()) == 1)
    os.kill(first, signal.SIGKILL)
    await _until(lambda: plugin.status.restarts == 1 and plugin.status.state == "serving")
    assert plugin.status.last_exit == "child exited (killed by SIGKILL)"
    second = plugin.status.pid
    assert second not in (None, first)
    assert not alive(first)
    # The held LoadControllerWithConfig and Echo are re-resolved by the new child.
    await _until(lambda: [av.value.pid for av in held.get_values()] == [second])
    assert (await _echo(bus, "two")) == ipc_echo.EchoReply("a:two", second)
    href.release()
    ref.release()


async def test_missed_heartbeats_kill_and_restart_a_stuck_child(
    bus: Bus, make_plugin: MakePlugin, tmp_path: Path
) -> None:
    plugin = make_plugin("ipc_evil:PLUGIN", backoff=QUICK_BACKOFF, **FAST)
    await plugin.start()
    first = plugin.status.pid
    ref = await start_controller(bus, "test/ipc/evil/1")
    _inst, mref = bus.add_directive(ipc_evil.Misbehave(f"block-once:{tmp_path / 'blocked'}"))
    await _until(lambda: plugin.status.restarts >= 1)
    mref.release()
    assert plugin.status.last_exit is not None
    assert plugin.status.last_exit.startswith("missed heartbeats: no answer for 1.5 s")
    assert first is not None
    assert not alive(first)
    ref.release()


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("garbage", "malformed message from the child: plugin ipc_evil: malformed message"),
        ("oversize", "exceeds the limit of 1048576 bytes"),
    ],
)
async def test_malformed_message_from_the_child_is_refused_host_unaffected(
    bus: Bus, make_plugin: MakePlugin, how: str, why: str
) -> None:
    evil = make_plugin("ipc_evil:PLUGIN", backoff=QUICK_BACKOFF, **FAST)
    echo = make_plugin(**FAST)
    await evil.start()
    await echo.start()
    eref = await start_controller(bus, "test/ipc/echo/1")
    vref = await start_controller(bus, "test/ipc/evil/1")
    first = evil.status.pid
    _inst, mref = bus.add_directive(ipc_evil.Misbehave(how))
    await _until(lambda: evil.status.restarts >= 1)
    assert evil.status.last_exit is not None
    assert why in evil.status.last_exit
    assert first is not None
    assert not alive(first)
    # The host and the other plugin never noticed.
    assert (await _echo(bus, "still here")).pid == echo.status.pid
    assert echo.status.restarts == 0
    mref.release()
    eref.release()
    vref.release()


async def test_plugin_that_cannot_load_fails_start_and_leaves_nothing(
    bus: Bus, make_plugin: MakePlugin
) -> None:
    for entry, why in [
        ("ipc_evil:BROKEN", "is not a plugin object"),
        ("no_such_module:PLUGIN", "No module named 'no_such_module'"),
    ]:
        plugin = make_plugin(entry)
        with pytest.raises(ProcessPluginError, match=why):
            await plugin.start()
        assert plugin.status.state == "failed"
        assert plugin.session is None


async def test_stop_ends_the_child_and_removes_its_values(
    bus: Bus, make_plugin: MakePlugin
) -> None:
    plugin = make_plugin()
    await plugin.start()
    pid = plugin.status.pid
    assert pid is not None
    await start_controller(bus, "test/ipc/echo/1")
    inst, ref = bus.add_directive(ipc_echo.Stream(3))
    await _until(lambda: len(inst.get_values()) == 3)
    await plugin.stop()
    assert not alive(pid)
    assert not inst.get_values()
    assert plugin.status.state == "stopped"
    async with asyncio.timeout(5):
        values, cref = await exec_collect_values(bus, ipc_echo.Stream(4))
    assert values == []
    cref.release()
    ref.release()
