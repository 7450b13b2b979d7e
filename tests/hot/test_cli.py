"""``cbus daemon --hot`` and ``cbus demo --watch`` at the command line: refusals and help."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_demo_watch_prints_a_reload_with_the_count_carried_over(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("hot-demo", "demo-greeting"):
        shutil.copytree(repo / "plugins" / name, tmp_path / "src" / name)
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*CBUS, "demo", "--watch", "--sources", str(tmp_path / "src")],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait(out, "Ctrl-C stops", proc)
        library = tmp_path / "src" / "demo-greeting" / "src" / "demo_greeting" / "__init__.py"
        library.write_text(library.read_text().replace('"hello"', '"howdy"'))
        text = _wait(out, '"howdy, world!" (greeting #2)', proc)
        assert "generation #2 serving in" in text
        assert "1 state(s) carried" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.read_text()
        assert "stopped: every controller stopped" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait(out: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        content = out.read_text()
        if text in content:
            return content
        assert proc.poll() is None, content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not printed:\n{out.read_text()}")
