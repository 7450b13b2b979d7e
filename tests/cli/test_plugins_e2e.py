"""End to end: ``cbus-compile`` a plugin, ``cbus daemon --plugins-dir`` hot-reloads it.

Everything runs as real subprocesses on a private copy of ``plugins/``: compile the
hot-demo plugin, start the daemon with a config set that runs its greeter, edit the
path-dependency library and compile again (the daemon swaps the generation), drop a
corrupt wheel (the daemon logs it and keeps serving), then stop it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helpers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CBUS = [sys.executable, "-m", "controllerbus.cli"]
# controllerbus.cli.compile has no ``__main__`` block; use the console script.
CBUS_COMPILE = [str(Path(sys.executable).with_name("cbus-compile"))]
BINARY_ID = "controllerbus/examples/hot-demo/codegen-demo/1"
GREETER_ID = "controllerbus/example/hot-demo/greeter/1"
CONFIG = f"""\
boilerplate-demo-0:
  config:
    exampleField: testing
  id: controllerbus/example/boilerplate/1
  revision: 1
greeter-demo:
  config:
    punctuation: "!"
  id: {GREETER_ID}
  revision: 1
"""
BOILERPLATE_ONLY = """\
boilerplate-demo-0:
  config:
    exampleField: testing
  id: controllerbus/example/boilerplate/1
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A private copy of ``plugins/`` in ``tmp_path`` (edits never touch the repo)."""
    shutil.copytree(
        REPO / "plugins",
        tmp_path / "plugins",
        ignore=shutil.ignore_patterns("__pycache__", ".cbus-codegen", "*.pyc"),
    )
    return tmp_path


def run_json(args: list[str], cwd: Path, *, timeout: float) -> dict[str, Any]:
    """Run a command that prints JSON; it must succeed."""
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def compile_hot_demo(cwd: Path, out: Path) -> dict[str, Any]:
    args = ["compile", "plugins/hot-demo", "-o", str(out), "--plugin-binary-id", BINARY_ID]
    data = run_json([*CBUS_COMPILE, *args, "--json"], cwd, timeout=120)
    assert data["binary_id"] == BINARY_ID
    return data


class Daemon(helpers.Daemon):
    """``cbus daemon`` in a subprocess, logging to a file; RuntimeWarnings are errors."""

    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__(cwd, *args, env={"PYTHONWARNINGS": "error::RuntimeWarning"})


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def plugins_list(cwd: Path, state: Path) -> dict[str, Any]:
    return run_json(
        [*CBUS, "plugins", "list", "--json", "--state-dir", str(state)], cwd, timeout=60
    )


def record_of(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    records = [r for r in manifest["plugins"] if r["binary_id"] == key]
    assert len(records) == 1, manifest
    record: dict[str, Any] = records[0]
    return record


def test_compile_edit_recompile_and_a_corrupt_wheel_with_a_running_daemon(
    checkout: Path, daemons: list[Daemon]
) -> None:
    out, state, config = checkout / "dist-plugins", checkout / "state", checkout / "cbus.yaml"
    config.write_text(CONFIG)
    first = compile_hot_demo(checkout, out)
    assert sorted(p.name for p in out.glob("*.whl")) == [Path(first["wheel"]).name]

    daemon = Daemon(
        checkout, "-c", str(config), "--plugins-dir", str(out), "--state-dir", str(state)
    )
    daemons.append(daemon)
    log = daemon.wait_for("greeter ready: hello, world")
    assert f"config set key greeter-demo: running {GREETER_ID}" in log

    # Edit the path dependency and compile into the watched directory.
    library = checkout / "plugins" / "demo-greeting" / "src" / "demo_greeting" / "__init__.py"
    library.write_text(library.read_text().replace('GREETING = "hello"', 'GREETING = "howdy"'))
    mark = len(daemon.text())
    second = compile_hot_demo(checkout, out)
    assert second["sha256"] != first["sha256"]
    assert [Path(p).name for p in second["removed"]] == [Path(first["wheel"]).name]
    daemon.wait_for("greeter ready: howdy, world", after=mark)
    log = daemon.wait_for(f"replaced {first['sha256'][:12]}", after=mark)
    replaced = [
        line
        for line in log[mark:].splitlines()
        if f"plugin {BINARY_ID}" in line and f"replaced {first['sha256'][:12]}" in line
    ]
    assert len(replaced) == 1, log[mark:]
    assert f"generation {second['sha256'][:12]}" in replaced[0]

    # A corrupt wheel of the same plugin, newer than the good one: logged, not served.
    mark = len(daemon.text())
    bad = out / Path(second["wheel"]).name.replace(second["version"].split("+cbus.")[1], "f" * 16)
    assert bad.name != Path(second["wheel"]).name
    data = Path(second["wheel"]).read_bytes()
    tmp = out / f".{bad.name}.partial"
    tmp.write_bytes(data[: len(data) // 2])
    os.replace(tmp, bad)
    log = daemon.wait_for(f"unable to load plugin file {bad.name}", after=mark)
    time.sleep(1.0)  # time enough for a wrong unload or restart to show up
    tail = daemon.text()[mark:]
    assert "not a valid zip archive" in tail
    assert f"unloaded (generation {second['sha256'][:12]}" not in tail
    assert f"controller stopped: {GREETER_ID}" not in tail
    assert "greeter ready" not in tail

    manifest = plugins_list(checkout, state)
    record = record_of(manifest, BINARY_ID)
    assert (record["status"], record["generation"], record["leaks"]) == (
        "active",
        second["sha256"],
        [],
    )
    assert record["binary_version"] == second["binary_version"]
    failed = record_of(manifest, f"wheel:{bad.name}")
    assert failed["status"] == "rejected"
    assert "not a valid zip archive" in failed["error"]
    assert [p.name for p in (state / "generations").iterdir()] == [second["sha256"]]

    assert daemon.stop() == 0
    log = daemon.text()
    assert log.rstrip().endswith("controllerbus.daemon: stopped")
    assert f"plugin {BINARY_ID} unloaded (generation {second['sha256'][:12]}" in log
    for bad_text in ("survived", "Traceback", "Task was destroyed", "never awaited"):
        assert bad_text not in log
    record = record_of(plugins_list(checkout, state), BINARY_ID)
    assert (record["status"], record["leaks"]) == ("unloaded", [])


def test_a_second_daemon_on_the_same_state_dir_fails_fast(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    plugins, state, config = tmp_path / "plugins", tmp_path / "state", tmp_path / "cbus.yaml"
    plugins.mkdir()
    config.write_text(BOILERPLATE_ONLY)
    args = ("-c", str(config), "--plugins-dir", str(plugins), "--state-dir", str(state))
    first = Daemon(tmp_path, *args)
    daemons.append(first)
    first.wait_for("0 plugin(s) active")

    started = time.monotonic()
    second = subprocess.run(
        [*CBUS, "daemon", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )

    assert second.returncode == 1
    assert time.monotonic() - started < 15
    assert (
        f"Error: state directory {state} is in use by another process (pid {first.proc.pid}); "
        "stop it or pass a different --state-dir" in second.stderr
    )
    assert "Traceback" not in second.stderr
    assert first.proc.poll() is None, "the first daemon must keep running"
    assert first.stop() == 0
