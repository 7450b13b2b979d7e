"""``cbus daemon --hot`` and ``cbus demo --watch`` at the command line: refusals and help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CBUS = [sys.executable, "-m", "controllerbus.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CBUS, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_a_hot_target_without_a_project_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("daemon", "--hot", "nowhere", cwd=tmp_path)
    assert result.returncode == 1
    assert "Error: --hot nowhere: no pyproject.toml in" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_explains_hot_and_watch(tmp_path: Path) -> None:
    daemon = _run("daemon", "--help", cwd=tmp_path).stdout
    assert "--hot DIR[,DIR...]" in daemon
    assert "cbus daemon --hot plugins/hot-demo" in daemon
    demo = _run("demo", "--help", cwd=tmp_path).stdout
    assert "--watch" in demo
