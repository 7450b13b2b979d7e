"""Crash-loop protection: a plugin that kills the daemon only once it is activated.

The plugin passes its trial (it behaves in the trial child) and calls ``os._exit``
when imported into the daemon. The daemon dies; the next start finds the activation
marker and marks the generation suspect (tried again, after a trial); the second
crash quarantines it: the next start refuses it, says how to retry, and the good
wheel serves. ``cbus plugins retry`` clears the quarantine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..loader.pluginkit import rewrite_member
from .harness import DaemonUnderTest, GoodPlugin

pytestmark = pytest.mark.slow

CRASH = 13
_HOOK = "CONTROLLER_ID = "
_ONLY_IN_THE_DAEMON = (
    "import os, sys\n"
    "if getattr(sys.modules['__main__'].__spec__, 'name', '') != "
    "'controllerbus.loader.trial_child':\n"
    f"    os._exit({CRASH})\n"
)


@pytest.fixture
def daemon(good_plugin: GoodPlugin, tmp_path: Path) -> Iterator[DaemonUnderTest]:
    dut = DaemonUnderTest(tmp_path / "daemon", good_plugin)
    try:
        yield dut
    finally:
        dut.kill()


def test_a_plugin_that_crashes_the_daemon_is_suspect_then_quarantined(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    daemon.start()
    daemon.assert_serving()
    source = daemon.next_wheel(tmp_path / "staging")
    crasher = rewrite_member(
        source,
        tmp_path / "crasher" / source.name,
        daemon.good.greeter_member,
        _HOOK,
        _ONLY_IN_THE_DAEMON + _HOOK,
    )
    daemon.drop(crasher)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=60) == CRASH
    marker = json.loads((daemon.state / "activating.json").read_text())
    assert marker["binary_id"] == daemon.good.binary_id

    # Second start: suspect, tried again after a trial (which it passes): crash 2.
    daemon.start(wait=None)
    assert daemon.proc.wait(timeout=60) == CRASH
    log = daemon.text()
    assert "(crash 1); suspect: it is loaded again only after a trial import passes" in log
    crashes = json.loads((daemon.state / "crashes.json").read_text())
    assert [entry["count"] for entry in crashes.values()] == [1]

    # Third start: quarantined and refused; the good wheel serves.
    daemon.start()
    daemon.assert_serving()
    log = daemon.text()
    assert "(crash 2); quarantined" in log
    assert f"cbus plugins retry {daemon.good.binary_id} --state-dir" in log
    assert "is quarantined: the daemon died 2 times while activating generation" in log
    record = daemon.record(daemon.good.binary_id)
    assert record is not None
    assert any("is quarantined" in f["error"] for f in record["failures"]), record
    assert record["error"] is None  # the good wheel loaded after: the status is clear
    assert not daemon.stray_processes()
    daemon.stop()

    retried = subprocess.run(
        [
            sys.executable,
            "-m",
            "controllerbus.cli",
            "plugins",
            "retry",
            daemon.good.binary_id,
            "--state-dir",
            str(daemon.state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert retried.returncode == 0, retried.stderr
    assert "cleared 1 crashed generation(s)" in retried.stdout
    assert not (daemon.state / "crashes.json").exists()
