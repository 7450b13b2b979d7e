"""CLI refusals of the production flags: clear message, no traceback, nothing left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CBUS = [sys.executable, "-m", "controllerbus.cli"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CBUS, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_index_url_needs_trust(tmp_path: Path) -> None:
    (tmp_path / "cbus.yaml").write_text("")
    result = run(tmp_path, "daemon", "-c", "cbus.yaml", "--index-url", "http://127.0.0.1:9/")
    assert result.returncode != 0
    assert "--index-url needs --trust FILE" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".cbus-state").exists()


def test_hot_and_trust_are_refused_together(tmp_path: Path) -> None:
    (tmp_path / "trust.txt").write_text("")
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\n')
    result = run(tmp_path, "daemon", "--hot", "plugin", "--trust", "trust.txt")
    assert result.returncode != 0
    assert "--hot and --trust cannot be combined" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / ".cbus-state").glob("generations/*"))


def test_plugins_trust_on_a_directory_without_wheels(tmp_path: Path) -> None:
    result = run(tmp_path, "plugins", "trust", str(tmp_path))
    assert result.returncode != 0
    assert "holds no *.whl file to pin" in result.stderr
    assert "Traceback" not in result.stderr
