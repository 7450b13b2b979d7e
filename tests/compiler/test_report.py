"""What ``cbus-compile compile`` says it did: vendored, Requires-Dist, extras, dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_refusals import UV_LIB, lib_project, plugin


def test_cli_reports_vendored_requires_extras_and_dropped(tmp_path: Path) -> None:
    target = plugin(
        tmp_path,
        deps='"lib", "packaging>=24"',
        extra='[project.optional-dependencies]\nfast = ["httpx>=0.27"]\n'
        '[dependency-groups]\ndev = ["pytest"]\n' + UV_LIB,
        files=lib_project(),
    )
    command = [
        sys.executable,
        "-m",
        "controllerbus.cli.compile",
        "compile",
        "-o",
        str(tmp_path / "o"),
    ]
    text = subprocess.run(
        [*command, str(target)], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stderr
    assert f"vendored lib 1.0 ({tmp_path / 'lib'})" in text
    assert "Requires-Dist packaging>=24" in text
    assert "extra fast: httpx>=0.27" in text
    assert "dropped plugin: [dependency-groups] dev (development only)" in text
    done = subprocess.run(
        [*command, "--json", str(target)], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    result = json.loads(done.stdout)
    assert result["extras"] == {"fast": ["httpx>=0.27"]}
    assert result["dropped"] == ["plugin: [dependency-groups] dev (development only)"]
    assert [v.split()[0] for v in result["vendored"]] == ["plugin", "lib"]
    assert "packaging>=24" in result["requires"]
