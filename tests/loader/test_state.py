"""StateDir: one process per state directory, leftovers cleaned, generations collected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controllerbus.loader import StateDir, StateDirError, StateDirLocked

LOCK_IN_CHILD = """
import sys
from controllerbus.loader import StateDir, StateDirLocked
try:
    with StateDir(sys.argv[1], lock_timeout=0.1):
        print("locked")
except StateDirLocked as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


def _lock_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LOCK_IN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_enter_creates_layout_and_records_pid(tmp_path: Path) -> None:
    root = tmp_path / "state"
    with StateDir(root) as state:
        assert state.locked
        assert state.generations_dir.is_dir()
        assert state.tmp_dir.is_dir()
        assert state.pid_path.read_text() == f"{os.getpid()}\n"
    assert not state.pid_path.exists()
    with StateDir(root, lock_timeout=0.05) as again:  # released: can be taken again
        assert again.locked


def test_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "state"
    with StateDir(root):
        result = _lock_in_child(root)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"state directory {root} is in use by another process (pid {os.getpid()}); "
        "stop it or pass a different --state-dir"
    )
    # Released: the next process gets it.
    again = _lock_in_child(root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "locked"


def test_second_state_dir_in_same_process_is_refused(tmp_path: Path) -> None:
    with StateDir(tmp_path), pytest.raises(StateDirLocked) as caught:
        StateDir(tmp_path, lock_timeout=0.05).__enter__()
    assert caught.value.pid == os.getpid()


def test_leftovers_in_tmp_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / "tmp" / "abc.123" / "venv" / "lib"
    leftover.mkdir(parents=True)
    (leftover / "file.py").write_text("x")
    (tmp_path / "tmp" / "stray-file").write_text("x")
    with StateDir(tmp_path) as state:
        assert list(state.tmp_dir.iterdir()) == []


def test_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateDirError, match="cannot create it"):
        StateDir(blocker / "state").__enter__()


def test_operations_need_the_lock(tmp_path: Path) -> None:
    with pytest.raises(StateDirError, match="not locked"):
        StateDir(tmp_path).gc_generations(keep=())


def _fake_generation(state: StateDir, gen_id: str) -> Path:
    path = state.generations_dir / gen_id
    (path / "lib").mkdir(parents=True)
    (path / "lib" / "mod.py").write_text("x = 1\n")
    return path


def test_gc_removes_unreferenced_generations(tmp_path: Path) -> None:
    keep, drop, live = "a" * 64, "b" * 64, "c" * 64
    with StateDir(tmp_path) as state:
        for gen_id in (keep, drop, live):
            _fake_generation(state, gen_id)
        (state.generations_dir / "README").write_text("not a generation")
        sys.path.append(str(state.generations_dir / live / "lib"))
        try:
            removed = state.gc_generations(keep={keep})
        finally:
            sys.path.remove(str(state.generations_dir / live / "lib"))
        assert removed == [drop]
        assert state.generation_ids() == [keep, live]  # live: on sys.path, never removed
        assert (state.generations_dir / "README").exists()
        assert list(state.tmp_dir.iterdir()) == []
        assert state.gc_generations(keep={keep}) == [live]
