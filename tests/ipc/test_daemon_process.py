"""``cbus daemon --isolation process`` in a real subprocess: kill -9 leaves no child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controllerbus.loader.manifest import read_manifest
from tests.helpers import eventually_sync

from .conftest import alive
from .test_loader_process import make_wheel

pytestmark = pytest.mark.slow

CONFIG = """\
boilerplate-demo-0:
  config:
    exampleField: testing
  id: controllerbus/example/boilerplate/1
old-0:
  config:
    greeting: from the config set
  id: test/ipc/old/1
"""


def test_kill_9_of_the_daemon_leaves_no_plugin_child(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    wheel = make_wheel(tmp_path, generation="daemon")
    wheel.rename(plugins / wheel.name)
    (tmp_path / "config.yaml").write_text(CONFIG)
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controllerbus.cli",
                "daemon",
                "-c",
                "config.yaml",
                "--plugins-dir",
                str(plugins),
                "--state-dir",
                str(state),
                "--isolation",
                "process",
                "--no-watch",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:

        def child_pid() -> int | None:
            try:
                record = read_manifest(state).get("ipc-old")
            except Exception:
                return None
            if record is None or record.status != "active":
                return None
            assert record.isolation == "process"
            return record.pid

        found = eventually_sync(
            child_pid,
            within=60,
            give_up=lambda: daemon.poll() is not None,
            failure=lambda: f"no process plugin in the manifest; log:\n{log.read_text()}",
        )
        assert found is not None
        pid = found
        assert alive(pid)
        with open(f"/proc/{pid}/stat") as fh:
            assert int(fh.read().split(") ", 1)[1].split()[1]) == daemon.pid  # its parent
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "controllerbus.cli",
                "plugins",
                "list",
                "--state-dir",
                str(state),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert f"process: pid {pid}, restarts 0" in listed
        # The config set reached the child through the proxy factory (a RemoteConfig).
        eventually_sync(
            lambda: "controller started: test/ipc/old/1" in log.read_text(),
            within=30,
            failure=lambda: f"the config set's controller did not start; log:\n{log.read_text()}",
        )
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
        eventually_sync(
            lambda: not alive(pid),
            within=10,
            failure=lambda: f"plugin child {pid} outlived its killed host",
        )
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
