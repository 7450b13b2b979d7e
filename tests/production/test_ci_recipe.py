"""The CI recipe on the repository's own plugins/: compile isolated, pin, load pinned.

Runs ``plugins/ci_build.py`` (what ``nox -s plugins`` runs) in a subprocess, checks
the trust file pins exactly the wheel it built and that an in-process rebuild gives
the same bytes, then starts ``cbus daemon --trust`` on the result: the hot-demo
greeter serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controllerbus.loader.trust import read_trust_file

from .prodkit import sha256
from .test_production_e2e import Daemon, assert_clean_stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BINARY_ID = "controllerbus/examples/hot-demo/codegen-demo/1"


def test_ci_build_pins_a_reproducible_wheel_that_a_trusting_daemon_loads(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dist-plugins"
    result = subprocess.run(
        [sys.executable, str(REPO / "plugins" / "ci_build.py"), str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("*.whl")
    trust = read_trust_file(out / "trust.txt")
    assert [e.filename for e in trust.entries] == [wheel.name]
    assert trust.allows(wheel.name, sha256(wheel))

    # The same sources built in-process give the same bytes (what `verify` proves).
    again = subprocess.run(
        [str(Path(sys.executable).with_name("cbus-compile")), "compile",
         str(REPO / "plugins" / "hot-demo"), "-o", str(tmp_path / "again"),
         "--plugin-binary-id", BINARY_ID, "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["sha256"] == sha256(wheel)

    daemon = Daemon(
        tmp_path, "-c", str(REPO / "plugins" / "hot-demo" / "controllerbus_daemon.yaml"),
        "--plugins-dir", str(out), "--trust", str(out / "trust.txt"),
        "--state-dir", str(tmp_path / "state"), "--no-watch",
    )  # fmt: skip
    try:
        daemon.wait_for("greeter ready: hello, world")
        assert_clean_stop(daemon)
    finally:
        daemon.kill()
