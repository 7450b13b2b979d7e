"""End to end: ``cbus daemon --hot`` on a copy of the hot-demo plugin, as a subprocess.

The daemon compiles the plugin itself, a host-owned probe controller holds a
``Hello`` directive and writes every answer to a file. An edit is answered by the
new code; a syntax error leaves the old code serving and puts file:line in the log
and the manifest; the fix is answered; the greeter's counter is carried across all
of it; SIGTERM exits 0.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GREETER_ID = "controllerbus/example/hot-demo/greeter/1"


def config(replies: Path) -> str:
    return f"""\
greeter-demo:
  config:
    punctuation: "!"
  id: {GREETER_ID}
  revision: 1
probe:
  config:
    name: world
    out: {replies}
  id: controllerbus/example/hello-probe/1
  revision: 1
"""


def replies_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_reply(path: Path, count: int, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = replies_of(path)
        if len(replies) >= count:
            return replies[count - 1]
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no reply #{count}: {replies_of(path)}\n{log.read_text()}")


def wait_for_log(log: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        assert proc.poll() is None, content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{log.read_text()}")


def wait_for_record(state: Path, accept: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The hot-demo manifest record, once ``accept`` takes it (the log line comes first)."""
    deadline = time.monotonic() + 30
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            manifest = json.loads((state / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {"plugins": []}
        records = [r for r in manifest["plugins"] if r["binary_id"] == "cbus-hot-demo"]
        if records and accept(record := records[0]):
            return record
        time.sleep(0.05)
    raise AssertionError(f"manifest record not as expected: {record}")


def test_hot_daemon_edit_syntax_error_fix_state_and_sigterm(tmp_path: Path) -> None:
    for name in ("hot-demo", "demo-greeting"):
        shutil.copytree(
            REPO / "plugins" / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    replies, state, log = tmp_path / "replies.jsonl", tmp_path / "state", tmp_path / "daemon.log"
    cfg = tmp_path / "cbus.yaml"
    cfg.write_text(config(replies))
    hot, cbus = str(tmp_path / "hot-demo"), [sys.executable, "-m", "controllerbus.cli"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cbus, "daemon", "-c", str(cfg), "--hot", hot, "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        first = wait_for_reply(replies, 1, proc, log)
        assert first == {"text": "hello, world!", "responder": GREETER_ID, "count": 1}
        wait_for_log(log, "hot: watching", proc)

        # 1. An edit of the path dependency: the new code answers, the count goes on.
        library = tmp_path / "demo-greeting" / "src" / "demo_greeting" / "__init__.py"
        library.write_text(library.read_text().replace('"hello"', '"howdy"'))
        assert wait_for_reply(replies, 2, proc, log) == {
            "text": "howdy, world!",
            "responder": GREETER_ID,
            "count": 2,
        }

        # 2. A syntax error: logged and recorded with file:line; the old code serves on.
        greeter = tmp_path / "hot-demo" / "src" / "cbus_hot_demo" / "greeter.py"
        good = greeter.read_text()
        greeter.write_text(good + "\ndef broken(:\n")
        bad_line = len((good + "\ndef broken(:\n").splitlines())
        where = f"{greeter}:{bad_line}"
        text = wait_for_log(log, where, proc)
        assert "compile failed" in text
        record = wait_for_record(state, lambda r: r["error"] is not None)
        assert record["status"] == "active"
        assert where in record["error"]
        time.sleep(0.5)
        assert len(replies_of(replies)) == 2  # no reload, nothing restarted

        # 3. The fix (and a new greeting): served, the count carried over again.
        greeter.write_text(good.replace("+ self._punctuation", '+ self._punctuation + "?"'))
        assert wait_for_reply(replies, 3, proc, log) == {
            "text": "howdy, world!?",
            "responder": GREETER_ID,
            "count": 3,
        }
        text = log.read_text()
        assert "survived the unload" not in text
        record = wait_for_record(state, lambda r: r["error"] is None)
        assert record["status"] == "active"
        assert record["leaks"] == []

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
