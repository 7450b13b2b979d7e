"""Batched durability: one syncfs for the installs waiting together (controllerbus._groupsync)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path

import pytest

import controllerbus._groupsync as groupsync
from controllerbus import _fs
from controllerbus._groupsync import GroupSync, current_group, group_sync

pytestmark = pytest.mark.skipif(groupsync._SYNCFS is None, reason="syncfs is Linux-only")


def test_fsync_tree_in_a_batch_is_one_syncfs_and_reaches_worker_threads(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(5):
        (tree / "sub" / f"f{i}").write_text("x")

    async def main() -> GroupSync | None:
        with group_sync(tmp_path) as group:
            await asyncio.gather(*(asyncio.to_thread(_fs.fsync_tree, tree) for _ in range(3)))
            await asyncio.to_thread(_fs.fsync_dir, tmp_path)
        assert current_group() is None
        return group

    group = asyncio.run(main())
    assert group is not None
    # 4 callers (3 trees + 1 dir): at most one flush each, at least one in all.
    assert 1 <= group.flushes <= 4
    assert current_group() is None


def test_every_caller_waits_for_a_flush_that_started_after_it_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = itertools.count()
    lock = threading.Lock()
    flush_starts: list[int] = []
    flush_ends: list[int] = []
    real = groupsync._syncfs

    def recording(root: Path) -> OSError | None:
        with lock:
            flush_starts.append(next(clock))
        error = real(root)
        with lock:
            flush_ends.append(next(clock))
        return error

    monkeypatch.setattr(groupsync, "_syncfs", recording)
    group = GroupSync(tmp_path)
    spans: list[tuple[int, int]] = []

    def caller() -> None:
        with lock:
            asked = next(clock)
        group.sync()
        with lock:
            spans.append((asked, next(clock)))

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(spans) == 12
    assert group.flushes == len(flush_starts) <= 12
    for asked, returned in spans:
        assert any(
            asked < start and end < returned
            for start, end in zip(flush_starts, flush_ends, strict=True)
        ), f"a caller (asked at {asked}) returned without a flush started after it"


def test_a_failing_syncfs_falls_back_to_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(groupsync, "_syncfs", lambda root: OSError(5, "EIO", str(root)))
    fsynced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    (tmp_path / "f").write_text("x")
    with group_sync(tmp_path):
        _fs.fsync_tree(tmp_path)
    assert len(fsynced) == 2  # the file and the directory, one by one
