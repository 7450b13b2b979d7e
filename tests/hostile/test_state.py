"""Hostile state directories: files nobody should write there, a full disk, read-only.

Files in the state directory are the daemon's own records, not its truth (the
wheels are): a corrupt manifest is moved aside, unreadable markers are ignored,
junk is cleaned up; each is logged and the daemon serves. A full or read-only file
system during an install is a clear error with the old generation still serving
and no half generation left. A second daemon on the same state directory is
refused with the first one's pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..loader.wheelkit import repack
from .harness import DaemonUnderTest, GoodPlugin

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(good_plugin: GoodPlugin, tmp_path: Path) -> Iterator[DaemonUnderTest]:
    dut = DaemonUnderTest(tmp_path / "daemon", good_plugin)
    try:
        yield dut
    finally:
        dut.kill()


def _start_with(dut: DaemonUnderTest, name: str, content: bytes | None) -> str:
    """Start the daemon with ``name`` in its state dir (a directory if ``content`` is None)."""
    dut.state.mkdir(parents=True, exist_ok=True)
    target = dut.state / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        target.mkdir()
        (target / "junk").write_bytes(b"\0" * 100)
    else:
        target.write_bytes(content)
    dut.start()
    dut.assert_serving()
    assert not dut.stray_processes()
    return dut.text()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": 99, "plugins": []}', "manifest version 99 is not supported"),
        (json.dumps({"version": 1, "plugins": [{"wheel": 3}]}).encode(), "plugins.0"),
        (None, "cannot read it"),
    ],
    ids=["garbage", "future-version", "wrong-shape", "a-directory"],
)
def test_a_corrupt_manifest_is_moved_aside(
    daemon: DaemonUnderTest, content: bytes | None, says: str
) -> None:
    log = _start_with(daemon, "manifest.json", content)
    assert says in log
    assert "moved it to" in log
    assert list(daemon.state.glob("manifest.json.corrupt-*"))
    json.loads((daemon.state / "manifest.json").read_text())
    daemon.stop()


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("activating.json", b"\xff\xfe garbage", "ignoring an unreadable activation marker"),
        ("crashes.json", b"[1, 2", "ignoring an unreadable"),
        ("tmp/leftover", None, None),
        ("generations/" + "ab" * 32, None, None),
    ],
    ids=["activation-marker", "crash-counts", "tmp-junk", "unknown-generation"],
)
def test_junk_in_the_state_dir_is_ignored_or_cleaned(
    daemon: DaemonUnderTest, name: str, content: bytes | None, says: str | None
) -> None:
    log = _start_with(daemon, name, content)
    if says is not None:
        assert says in log
    assert sorted(p.name for p in (daemon.state / "generations").iterdir()) == [daemon.good.sha256]
    assert list((daemon.state / "tmp").iterdir()) == []
    daemon.stop()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (needs root and mount permission; else the test is skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _big_wheel(dut: DaemonUnderTest, staging: Path) -> Path:
    source = dut.next_wheel(staging)
    member = f"{dut.good.projects.package}/blob.bin"
    return repack(source, staging / "big" / source.name, add={member: os.urandom(4 << 20)})


def _install_failure_keeps_serving(dut: DaemonUnderTest, staging: Path, says: str) -> None:
    mark = dut.mark()
    dropped = dut.drop(_big_wheel(dut, staging))
    dut.wait_for(says, after=mark, within=60)
    dut.assert_serving()
    assert sorted(p.name for p in (dut.state / "generations").iterdir()) == [dut.good.sha256]
    assert list((dut.state / "tmp").iterdir()) == []
    assert not dut.stray_processes()
    dut.remove(dropped)


def test_a_full_disk_during_install_keeps_the_old_generation(
    good_plugin: GoodPlugin, tmp_path: Path, small_fs: Path
) -> None:
    dut = DaemonUnderTest(tmp_path / "daemon", good_plugin)
    dut.state = small_fs / "state"
    try:
        dut.start()
        _install_failure_keeps_serving(
            dut, tmp_path / "staging", "the state directory's file system is full"
        )
        record = dut.record(good_plugin.binary_id)
        assert record is not None
        assert "No space left on device" in record["failures"][-1]["error"]
        dut.stop()
    finally:
        dut.kill()


def test_a_read_only_state_dir_during_install_keeps_the_old_generation(
    daemon: DaemonUnderTest, tmp_path: Path
) -> None:
    daemon.start()
    before = (daemon.state / "manifest.json").read_text()
    # A read-only bind mount over the state dir (the daemon's open lock file keeps
    # the original mount; every new open goes through the read-only one).
    state = str(daemon.state)
    bound = subprocess.run(["mount", "--bind", state, state], capture_output=True, check=False)
    if bound.returncode != 0:
        daemon.stop()
        pytest.skip(f"cannot bind-mount here: {bound.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", state, state], check=True)
        _install_failure_keeps_serving(
            daemon, tmp_path / "staging", "the state directory is on a read-only file system"
        )
        # The manifest cannot be written: the daemon says so, the file is intact.
        assert "cannot write the manifest" in daemon.text()
        assert (daemon.state / "manifest.json").read_text() == before
    finally:
        subprocess.run(["umount", "-l", state], check=False)
    daemon.stop()


def test_a_second_daemon_on_the_same_state_dir_is_refused_with_the_first_ones_pid(
    daemon: DaemonUnderTest,
) -> None:
    daemon.start()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "controllerbus.cli",
            "daemon",
            "-c",
            str(daemon.root / "cbus.yaml"),
            "--plugins-dir",
            str(daemon.plugins),
            "--state-dir",
            str(daemon.state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert f"is in use by another process (pid {daemon.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    daemon.assert_serving()
    daemon.stop()
