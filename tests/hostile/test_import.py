"""Hostile plugins at import time and in ``factories(bus)``, through a real daemon.

Each case is the good plugin with its greeter module (imported by the plugin's
entry point) or its factory rewritten to misbehave. The trial import, in a child
process with a deadline and resource limits, must catch every one of them while
the good generation keeps serving; nothing the trial started may survive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..loader.pluginkit import rewrite_member
from .harness import DaemonUnderTest, GoodPlugin, HostileCase, run_case

pytestmark = pytest.mark.slow

DEADLINE = 4
CPU = 1

_HOOK = "CONTROLLER_ID = "
_FACTORY = "    return ControllerFactory(GreeterConfig, GreeterController"


def at_import(code: str) -> Callable[[GoodPlugin, Path, Path], Path]:
    """A case maker: ``code`` runs when the greeter module is imported."""

    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        return rewrite_member(src, dst, good.greeter_member, _HOOK, code + "\n" + _HOOK)

    return make


def in_factory(code: str) -> Callable[[GoodPlugin, Path, Path], Path]:
    """A case maker: ``code`` runs in the greeter's factory constructor."""

    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        indented = "".join(f"    {line}\n" for line in code.splitlines())
        return rewrite_member(src, dst, good.greeter_member, _FACTORY, indented + _FACTORY)

    return make


CASES = [
    HostileCase(
        "os-exit", at_import("import os\nos._exit(7)"), "the trial import crashed (exit status 7)"
    ),
    HostileCase(
        "sleeps-forever",
        at_import("import time\ntime.sleep(10**6)"),
        f"import did not finish in {DEADLINE} s",
    ),
    HostileCase(
        "ignores-sigterm-and-sleeps",
        at_import(
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(10**6)"
        ),
        f"import did not finish in {DEADLINE} s",
    ),
    HostileCase(
        "child-holds-pipes-and-hangs",
        at_import(
            "import subprocess, sys, time\n"
            "subprocess.Popen(['sleep', '1000'], stdout=sys.stdout, stderr=sys.stderr)\n"
            "time.sleep(10**6)"
        ),
        f"import did not finish in {DEADLINE} s",
    ),
    HostileCase(
        "escapes-its-session-and-hangs",
        at_import(
            "import subprocess, time\n"
            "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
            "time.sleep(10**6)"
        ),
        f"import did not finish in {DEADLINE} s",
    ),
    HostileCase(
        "leaves-a-process",
        at_import("import subprocess\nsubprocess.Popen(['sleep', '1000'])"),
        "the import left 1 process(es) running",
    ),
    HostileCase(
        "leaves-a-process-in-another-session",
        at_import("import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)"),
        "the import left 1 process(es) running",
    ),
    HostileCase(
        "forks-a-sleeper",
        at_import("import os, time\nif os.fork() == 0:\n    time.sleep(1000)\n    os._exit(0)"),
        "the import left 1 process(es) running",
    ),
    HostileCase(
        "non-daemon-thread",
        at_import(
            "import threading, time\nthreading.Thread(target=time.sleep, args=(10**6,)).start()"
        ),
        "the import left non-daemon thread(s) running",
    ),
    HostileCase(
        "eats-memory",
        at_import("hog = bytearray(64 * 2**30)"),
        "the trial's address-space limit of 1024 MiB was hit",
    ),
    HostileCase(
        "spins-the-cpu",
        at_import("while True:\n    pass"),
        f"the trial's CPU-time limit of {CPU} s was hit",
    ),
    HostileCase(
        "opens-too-many-files",
        at_import("files = [open(__file__) for _ in range(100000)]"),
        "the trial's open-files limit of 64 was hit",
    ),
    HostileCase(
        "kills-itself",
        at_import("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        "killed by SIGKILL",
    ),
    HostileCase(
        "segfaults",
        at_import("import ctypes\nctypes.string_at(0)"),
        "killed by SIGSEGV",
    ),
    HostileCase(
        "kills-its-parent",
        at_import("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(2)"),
        "the trial-import server went away",
    ),
    HostileCase(
        "closes-every-descriptor",
        at_import("import os\nos.closerange(0, 4096)"),
        "the trial import crashed",
    ),
    HostileCase("sys-exit", at_import("raise SystemExit(0)"), "SystemExit: 0"),
    HostileCase(
        "keyboard-interrupt", at_import("raise KeyboardInterrupt('no')"), "KeyboardInterrupt: no"
    ),
    HostileCase(
        "infinite-recursion",
        at_import("def f():\n    return f()\nf()"),
        "RecursionError: maximum recursion depth exceeded",
    ),
    HostileCase(
        "factory-sleeps-forever",
        in_factory("import time\ntime.sleep(10**6)"),
        f"import did not finish in {DEADLINE} s",
    ),
    HostileCase("factory-os-exit", in_factory("import os\nos._exit(9)"), "(exit status 9)"),
]


@pytest.fixture(scope="module")
def daemon(
    good_plugin: GoodPlugin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonUnderTest]:
    dut = DaemonUnderTest(
        tmp_path_factory.mktemp("hostile-import"),
        good_plugin,
        args=(
            "--trial-timeout",
            str(DEADLINE),
            "--trial-cpu",
            str(CPU),
            "--trial-memory",
            "1024",
            "--trial-files",
            "64",
        ),
    )
    dut.start()
    try:
        yield dut
        dut.stop()
    finally:
        dut.kill()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_import_is_refused_and_the_good_generation_serves(
    daemon: DaemonUnderTest, case: HostileCase, tmp_path: Path
) -> None:
    record = run_case(daemon, case, tmp_path)
    assert case.says in (record["error"] or "")
    assert record["error_time"] is not None


def test_the_daemon_serves_and_answers_while_a_trial_hangs(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    source = daemon.next_wheel(tmp_path)
    hang = at_import("import time\ntime.sleep(10**6)")
    made = hang(daemon.good, source, tmp_path / "out" / source.name)
    mark = daemon.mark()
    dropped = daemon.drop(made)
    try:
        daemon.wait_for("installed generation", after=mark, within=30)
        started = time.monotonic()
        # The trial is running (it cannot finish): the bus still answers at once.
        assert daemon.hello() == "hello, bob!"
        assert daemon.ask("ping") == {"pong": True}
        assert time.monotonic() - started < DEADLINE
        log = daemon.wait_for(f"unable to load plugin file {dropped.name}", after=mark)
        assert f"import did not finish in {DEADLINE} s" in log[mark:]
        daemon.assert_serving()
    finally:
        daemon.remove(dropped)
