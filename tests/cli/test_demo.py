"""``cbus demo``: the README's main job, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "controllerbus.cli", "demo", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'Hello("world") -> "hello, world!"' in out
    assert "BoilerplateResult(printed_len=55)" in out
    assert "compile again, nothing changed: no build" in out
    assert 'Hello("world") -> "howdy, world!"' in out
    assert "nothing survived" in out
    assert "rejected before anything was installed: not a valid zip archive" in out
    assert out.rstrip().endswith("demo finished")
    assert "Traceback" not in result.stderr
    # The demo edited its own copy, never the repository's plugin sources.
    repo_lib = Path(__file__).resolve().parents[2] / "plugins/demo-greeting/src/demo_greeting"
    assert 'GREETING = "hello"' in (repo_lib / "__init__.py").read_text()
    assert (
        'GREETING = "howdy"'
        in (work / "plugins/demo-greeting/src/demo_greeting/__init__.py").read_text()
    )
    # Everything was unloaded at shutdown and the manifest says so.
    manifest = (work / "state" / "manifest.json").read_text()
    assert '"status": "unloaded"' in manifest
