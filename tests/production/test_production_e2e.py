"""End to end: ``cbus daemon --trust`` with a wheelhouse, and with a real pypiserver.

Real subprocesses throughout: the daemon, ``cbus plugins trust``, ``pypi-server`` on
127.0.0.1 and ``twine upload``. The daemon's environment points every proxy variable
at a closed port, so any network access other than the test's own index fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helpers

from .prodkit import build, dependency_project, pin, plugin_project, sha256

pytestmark = pytest.mark.slow

CBUS = [sys.executable, "-m", "controllerbus.cli"]
BIN = Path(sys.executable).parent
CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
OFFLINE = {
    "http_proxy": CLOSED,
    "https_proxy": CLOSED,
    "HTTP_PROXY": CLOSED,
    "HTTPS_PROXY": CLOSED,
    "PIP_NO_INDEX": "1",
    "no_proxy": "127.0.0.1",
    "NO_PROXY": "127.0.0.1",
}


def config_for(prefix: str) -> str:
    return f"greeter:\n  id: test/{prefix}/greeter/1\n  config:\n    punctuation: '!'\n"


class Daemon(helpers.Daemon):
    """``cbus daemon`` in a subprocess with the offline environment, logging to a file."""

    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__(cwd, *args, env=OFFLINE, within=60)


@pytest.fixture
def procs() -> Iterator[list[Daemon | subprocess.Popen[bytes]]]:
    started: list[Daemon | subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if isinstance(proc, Daemon):
            proc.kill()
        elif proc.poll() is None:
            proc.kill()
            proc.wait()


def cbus(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [*CBUS, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def manifest(cwd: Path, state: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        cbus(cwd, "plugins", "list", "--json", "--state-dir", str(state))
    )
    return data


def active_generation(cwd: Path, state: Path, binary_id: str) -> str:
    (record,) = [r for r in manifest(cwd, state)["plugins"] if r["binary_id"] == binary_id]
    assert record["status"] == "active", record
    return str(record["generation"])


def assert_clean_stop(daemon: Daemon) -> str:
    assert daemon.stop() == 0
    log = daemon.text()
    assert log.rstrip().endswith("controllerbus.daemon: stopped")
    for bad in ("survived", "Traceback", "Task was destroyed", "never awaited"):
        assert bad not in log
    return log


def test_wheelhouse_offline_pinned_loads_unpinned_and_wrong_hashes_refused(
    tmp_path: Path, procs: list[Daemon | subprocess.Popen[bytes]]
) -> None:
    prefix = "cbe_house"
    src, dist = tmp_path / "src", tmp_path / "dist"
    house, state = tmp_path / "dist-plugins", tmp_path / "state"
    house.mkdir()
    v1 = build(plugin_project(src, prefix), dist / "v1")
    dep = build(dependency_project(src, prefix), dist / "dep")
    v2 = build(plugin_project(src, prefix, version="2.0.0"), dist / "v2")
    v3 = build(plugin_project(src, prefix, version="3.0.0"), dist / "v3")
    tampered = build(dependency_project(src / "t", prefix, word="tampered"), dist / "tampered")
    assert tampered.name == dep.name
    assert sha256(tampered) != sha256(dep)
    for wheel in (v1, dep):
        shutil.copy2(wheel, house / wheel.name)
    trust = house / "trust.txt"  # where `nox -s plugins` writes it: a change is an event
    cbus(tmp_path, "plugins", "trust", str(house), "-o", str(trust))
    (tmp_path / "cbus.yaml").write_text(config_for(prefix))

    daemon = Daemon(
        tmp_path, "-c", "cbus.yaml", "--plugins-dir", str(house),
        "--trust", str(trust), "--state-dir", str(state),
    )  # fmt: skip
    procs.append(daemon)
    daemon.wait_for(f"{prefix} ready: hello")
    serving = active_generation(tmp_path, state, f"test/{prefix}")

    # Unpinned: refused before unpacking, with its actual hash; v1 keeps serving.
    mark = len(daemon.text())
    shutil.copy2(v2, house / v2.name)
    log = daemon.wait_for(f"{v2.name}: refused, it is not pinned", after=mark)
    assert sha256(v2) in log[mark:]
    # Pinned with another hash.
    mark = len(daemon.text())
    with trust.open("a") as fh:
        fh.write(f"{v3.name} --hash=sha256:{'0' * 64}\n")
    shutil.copy2(v3, house / v3.name)
    log = daemon.wait_for(f"{v3.name}: refused, its hash does not match", after=mark)
    os.unlink(house / v3.name)
    # The plugin is pinned but its dependency wheel was swapped for other bytes.
    mark = len(daemon.text())
    shutil.copy2(tampered, house / dep.name)
    trust.write_text(trust.read_text() + pin(v3))
    shutil.copy(v3, house / v3.name)  # a new mtime: the loader retries a changed file
    log = daemon.wait_for(f"{dep.name}: refused, its hash does not match", after=mark)
    assert sha256(tampered) in log[mark:]
    time.sleep(0.5)
    tail = daemon.text()[mark:]
    assert "controller stopped" not in tail
    assert f"{prefix} ready" not in tail
    assert active_generation(tmp_path, state, f"test/{prefix}") == serving
    assert (state / "generations" / serving).is_dir()

    # The good dependency bytes are back and the trust file changes: the refused
    # wheels are retried, and the newest (v3) replaces v1.
    mark = len(daemon.text())
    shutil.copy2(dep, house / dep.name)
    trust.write_text(trust.read_text() + "# reviewed\n")
    log = daemon.wait_for(f"replaced {serving[:12]}", after=mark)
    assert f"plugin test/{prefix} 3.0.0 active" in log[mark:]

    log = assert_clean_stop(daemon)
    assert f"plugin test/{prefix} unloaded (generation {serving[:12]}" in log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_index(packages: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(port),
         "-a", ".", "-P", ".", "--log-stream", "none", str(packages)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(f"http://127.0.0.1:{port}/simple/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("pypi-server did not come up")


def upload(port: int, *wheels: Path) -> None:
    result = subprocess.run(
        [str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar",
         "--repository-url", f"http://127.0.0.1:{port}/", "-u", "ci", "-p", "ci",
         *map(str, wheels)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "no_proxy": "127.0.0.1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_pypiserver_index_and_the_index_going_away(
    tmp_path: Path, procs: list[Daemon | subprocess.Popen[bytes]]
) -> None:
    prefix = "cbe_index"
    src, dist, packages = tmp_path / "src", tmp_path / "dist", tmp_path / "packages"
    packages.mkdir()
    v1 = build(plugin_project(src, prefix), dist)
    dep = build(dependency_project(src, prefix), dist)
    v2 = build(plugin_project(src, prefix, version="2.0.0", dependency=None, word="howdy"), dist)
    port = _free_port()
    index = start_index(packages, port)
    procs.append(index)
    upload(port, v1, dep)
    trust = tmp_path / "trust.txt"
    trust.write_text(
        pin(v1) + f"{prefix.replace('_', '-')}-dep==1.0.0 --hash=sha256:{sha256(dep)}\n"
    )
    (tmp_path / "cbus.yaml").write_text(config_for(prefix))
    state = tmp_path / "state"

    daemon = Daemon(
        tmp_path, "-c", "cbus.yaml", "--trust", str(trust), "--state-dir", str(state),
        "--index-url", f"http://127.0.0.1:{port}/simple/", "--index-poll", "0.2",
    )  # fmt: skip
    procs.append(daemon)
    daemon.wait_for(f"{prefix} ready: hello")
    first = active_generation(tmp_path, state, f"test/{prefix}")
    assert sorted(p.name for p in (state / "wheelhouse").glob("*.whl")) == sorted(
        [v1.name, dep.name]
    )

    # The index goes away; v2 gets pinned: clear errors and retries, v1 keeps serving.
    index.send_signal(signal.SIGTERM)
    index.wait(timeout=30)
    mark = len(daemon.text())
    trust.write_text(trust.read_text() + pin(v2))
    daemon.wait_for("package index unavailable", after=mark)
    daemon.wait_for("retrying in", after=mark)
    tail = daemon.text()[mark:]
    assert "controller stopped" not in tail
    assert active_generation(tmp_path, state, f"test/{prefix}") == first

    # It comes back with v2: mirrored, loaded, and v1 (with its dependency) unloaded.
    index = start_index(packages, port)
    procs.append(index)
    upload(port, v2)
    daemon.wait_for(f"{prefix} ready: howdy", after=mark)
    log = daemon.wait_for(f"replaced {first[:12]}", after=mark)
    assert f"unloaded (generation {first[:12]}" in log[mark:]
    assert active_generation(tmp_path, state, f"test/{prefix}") == sha256(v2)
    assert_clean_stop(daemon)
