"""controllerbus._watch: the first batch means "armed", nothing written after it is lost."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from controllerbus._watch import Batch, Watcher, WatchError, WatchSet


def test_a_file_written_during_the_first_pass_comes_in_the_next_batch(tmp_path: Path) -> None:
    stop = threading.Event()
    batches: list[Batch] = []
    for batch in Watcher(WatchSet.of(trees=[tmp_path]), debounce_ms=200, step_ms=20, stop=stop):
        batches.append(batch)
        if batch.first:
            # "The first pass": it runs after the watch is set up, so this write counts.
            (tmp_path / "during-first-pass.txt").write_text("x")
            continue
        if str(tmp_path / "during-first-pass.txt") in batch.paths:
            stop.set()
    assert batches[0] == Batch((), first=True)
    assert any(str(tmp_path / "during-first-pass.txt") in b.paths for b in batches[1:])


async def test_dirs_watch_their_own_entries_only_and_accept_filters(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    stop = asyncio.Event()
    watcher = Watcher(
        WatchSet.of(dirs=[tmp_path]),
        accept=lambda _change, path: not path.endswith(".skip"),
        debounce_ms=200,
        step_ms=20,
        stop=stop,
    )
    seen: list[str] = []
    async with asyncio.timeout(20):
        async for batch in watcher:
            if batch.first:
                (tmp_path / "sub" / "deep.txt").write_text("x")
                (tmp_path / "ignored.skip").write_text("x")
                (tmp_path / "top.txt").write_text("x")
                continue
            seen.extend(batch.paths)
            if str(tmp_path / "top.txt") in seen:
                stop.set()
    assert str(tmp_path / "sub" / "deep.txt") not in seen
    assert str(tmp_path / "ignored.skip") not in seen


def test_a_missing_path_is_a_loud_watch_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(WatchError, match=r"cannot watch .*no-such-dir"):
        next(iter(Watcher(WatchSet.of(trees=[missing]), step_ms=20)))
    assert WatchSet.of(trees=[missing], files=[tmp_path]).existing() == WatchSet.of(
        files=[tmp_path]
    )


def test_an_empty_watch_set_is_refused() -> None:
    with pytest.raises(WatchError, match="nothing to watch"):
        Watcher(WatchSet.of())


def test_watch_set_membership(tmp_path: Path) -> None:
    ws = WatchSet.of(trees=[tmp_path / "t"], dirs=[tmp_path / "d"], files=[tmp_path / "f.toml"])
    assert str(tmp_path / "t" / "a" / "b.py") in ws
    assert str(tmp_path / "d" / "x.whl") in ws
    assert str(tmp_path / "d" / "sub" / "x.whl") not in ws
    assert str(tmp_path / "f.toml") in ws
    assert str(tmp_path / "t2" / "x") not in ws  # a prefix is not containment


async def test_closing_the_iterator_ends_the_watch_at_once(tmp_path: Path) -> None:
    batches = aiter(Watcher(WatchSet.of(dirs=[tmp_path]), debounce_ms=5000, step_ms=20))
    assert (await anext(batches)).first
    async with asyncio.timeout(2):  # not the 5 s debounce, not forever
        await batches.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
