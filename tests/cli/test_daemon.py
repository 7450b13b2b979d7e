"""``cbus daemon`` as a real subprocess: start, signal, exit codes, error messages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import eventually_sync

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "controllerbus_daemon.yaml"
CBUS = [sys.executable, "-m", "controllerbus.cli"]


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], within: float = 20) -> str:
    return eventually_sync(
        lambda: content if text in (content := log.read_text()) else "",
        within=within,
        give_up=lambda: proc.poll() is not None,
        failure=lambda: f"{text!r} not logged; got:\n{log.read_text()}",
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CBUS, "daemon", "-c", str(EXAMPLE)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_runs_example_and_exits_cleanly_on_signal(
    daemon: tuple[subprocess.Popen[bytes], Path], sig: signal.Signals
) -> None:
    proc, log = daemon
    _wait_for(log, "hello from boilerplate controller 1: hello world", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 0
    output = log.read_text()
    assert "controller stopped: controllerbus/example/boilerplate/1" in output
    assert output.rstrip().endswith("controllerbus.daemon: stopped")
    for bad in ("Traceback", "Task was destroyed", "never awaited", "Exception ignored"):
        assert bad not in output


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CBUS, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("daemon", "-c", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "Error: cannot find config at nope.yaml" in result.stderr
    assert "--write-config" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_names_key_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "k:\n  id: controllerbus/example/boilerplate/1\n  config: {exampleField: 5}\n"
        "other:\n  id: nobody/1\n  config: {}\n"
    )
    result = _run("daemon", "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "k.config.exampleField: Input should be a valid string" in result.stderr
    assert "other.id: unknown config id 'nobody/1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_write_config_creates_and_normalises_the_file(tmp_path: Path) -> None:
    target = tmp_path / "daemon.yaml"
    shutil.copy(EXAMPLE, target)
    with (tmp_path / "log").open("wb") as out:
        proc = subprocess.Popen(
            [*CBUS, "daemon", "-c", str(target), "--write-config"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait_for(tmp_path / "log", "wrote config set with 1 keys", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_text() == (
        "boilerplate-example-0:\n  config:\n    exampleField: hello world\n"
        "  id: controllerbus/example/boilerplate/1\n  revision: 1\n"
    )


def test_help_explains_commands(tmp_path: Path) -> None:
    result = _run("daemon", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "CONTROLLER_BUS_CONFIG" in result.stdout
    assert "Example:" in result.stdout
