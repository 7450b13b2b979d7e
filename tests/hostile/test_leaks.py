"""What a plugin's controllers leave running: part of the unload proof, and of SIGTERM.

Each case is a loadable plugin (its trial passes) whose greeter controller, once
running in the daemon, starts something it never stops. Removing the wheel unloads
it: the leak is recorded in the manifest and logged, child processes are killed.
SIGTERM then ends the daemon within its grace period with the exit status that
says what it had to abandon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controllerbus.cli.lifecycle import EXIT_ABANDONED_THREADS, EXIT_OK, EXIT_SHUTDOWN_TIMEOUT

from ..loader.pluginkit import rewrite_member
from .harness import DaemonUnderTest, GoodPlugin

pytestmark = pytest.mark.slow

GRACE = 3.0
_EXECUTE = "    async def execute(self) -> None:\n        return None\n"


def _in_execute(good: GoodPlugin, src: Path, dst: Path, body: str) -> Path:
    code = "    async def execute(self) -> None:\n" + "".join(
        f"        {line}\n" for line in body.splitlines()
    )
    return rewrite_member(src, dst, good.greeter_member, _EXECUTE, code)


@pytest.fixture
def leaky(good_plugin: GoodPlugin, tmp_path: Path) -> Iterator[Callable[[str], DaemonUnderTest]]:
    """Start a daemon whose only plugin runs ``body`` in its greeter's ``execute``."""
    started: list[DaemonUnderTest] = []

    def start(body: str) -> DaemonUnderTest:
        dut = DaemonUnderTest(tmp_path / "daemon", good_plugin, args=("--grace", str(GRACE)))
        wheel = _in_execute(
            good_plugin, good_plugin.wheel, tmp_path / "leaky" / good_plugin.wheel.name, body
        )
        dut.drop(wheel)
        started.append(dut)
        dut.start()
        return dut

    yield start
    for dut in started:
        dut.kill()


def _unload(dut: DaemonUnderTest, says: str) -> dict[str, object]:
    mark = dut.mark()
    dut.remove(dut.plugins / dut.good.wheel.name)
    record: dict[str, object] = {}

    def unloaded() -> bool:
        found = dut.record(dut.good.binary_id)
        if found is None or found["status"] != "unloaded":
            return False
        record.update(found)
        return True

    dut.wait_until(unloaded, "the plugin is unloaded")
    dut.wait_for(says, after=mark, within=10)
    leaks = record["leaks"]
    assert isinstance(leaks, list)
    assert any(says in leak for leak in leaks), leaks
    assert dut.alive()
    assert dut.ask("ping") == {"pong": True}
    return record


def test_a_non_daemon_thread_is_a_leak_and_sigterm_abandons_it(
    leaky: Callable[[str], DaemonUnderTest],
) -> None:
    dut = leaky(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(10**6,), name='plugin-sleeper').start()"
    )
    assert dut.hello() == "hello, bob!"
    _unload(dut, "non-daemon thread 'plugin-sleeper' is still running after the unload")
    started = time.monotonic()
    log = dut.stop(expect=EXIT_ABANDONED_THREADS)
    assert time.monotonic() - started < GRACE + 5
    assert "abandoning 1 non-daemon thread(s) that plugins left running: 'plugin-sleeper'" in log


def test_a_child_process_is_a_leak_and_is_killed(
    leaky: Callable[[str], DaemonUnderTest],
) -> None:
    dut = leaky("import subprocess\nself._child = subprocess.Popen(['sleep', '1000'])")
    assert dut.hello() == "hello, bob!"
    _unload(dut, "(sleep 1000) was still running; killed")
    assert not dut.stray_processes()
    dut.stop(expect=EXIT_OK)


def test_a_thread_holding_a_socket_is_a_leak(leaky: Callable[[str], DaemonUnderTest]) -> None:
    dut = leaky(
        "import socket, threading\n"
        "def serve():\n"
        "    listener = socket.socket()\n"
        "    listener.bind(('127.0.0.1', 0))\n"
        "    listener.listen()\n"
        "    listener.accept()\n"
        "threading.Thread(target=serve, name='plugin-server', daemon=True).start()"
    )
    assert dut.hello() == "hello, bob!"
    record = _unload(dut, "daemon thread 'plugin-server' is still running after the unload")
    leaks = record["leaks"]
    assert isinstance(leaks, list)
    assert any("open file descriptor" in leak and "socket:" in leak for leak in leaks), leaks
    dut.stop(expect=EXIT_OK)


def test_a_controller_blocking_the_event_loop_cannot_stop_sigterm(
    leaky: Callable[[str], DaemonUnderTest],
) -> None:
    dut = leaky("import asyncio, time\nawait asyncio.sleep(1)\ntime.sleep(10**6)")
    time.sleep(1.5)  # the loop is blocked now
    started = time.monotonic()
    log = dut.stop(expect=EXIT_SHUTDOWN_TIMEOUT)
    assert time.monotonic() - started < GRACE + 5
    assert f"the shutdown did not finish within {GRACE:g} s" in log
