"""Hostile wheel files dropped into a running daemon's plugins directory.

Every broken-wheel variant of the loader tests (corrupt zip, RECORD mismatch,
smuggled member, path traversal, missing entry point, import and factory errors,
conflicting requirements, wrong plugin objects) and files that are not wheels at
all, each as the newest wheel of the running plugin: refused with its reason while
the good generation serves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ..loader.pluginkit import BROKEN_VARIANTS, Broken
from .harness import DaemonUnderTest, GoodPlugin, HostileCase, Make, run_case

pytestmark = pytest.mark.slow


def _variant(broken: Broken) -> Make:
    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        result = SimpleNamespace(wheel=src, module=good.module, binary_id=good.binary_id)
        return broken.make(cast(Any, result), good.projects, dst)

    return make


def _bytes(data: bytes) -> Make:
    def make(good: GoodPlugin, src: Path, dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        return dst

    return make


def _truncated(good: GoodPlugin, src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


CASES = [
    *[
        HostileCase(
            f"variant-{name}",
            _variant(broken),
            broken.says,
            recorded_as="plugin" if broken.verified else "wheel",
        )
        for name, broken in sorted(BROKEN_VARIANTS.items())
    ],
    HostileCase("empty-file", _bytes(b""), "not a valid zip archive", recorded_as="wheel"),
    HostileCase("random-bytes", _bytes(os.urandom(4096)), "not a valid zip", recorded_as="wheel"),
    HostileCase("truncated", _truncated, "not a valid zip archive", recorded_as="wheel"),
]


@pytest.fixture(scope="module")
def daemon(
    good_plugin: GoodPlugin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonUnderTest]:
    dut = DaemonUnderTest(tmp_path_factory.mktemp("hostile-files"), good_plugin)
    dut.start()
    try:
        yield dut
        dut.stop()
    finally:
        dut.kill()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_is_refused_and_the_good_generation_serves(
    daemon: DaemonUnderTest, case: HostileCase, tmp_path: Path
) -> None:
    record = run_case(daemon, case, tmp_path)
    assert record["error_time"] is not None
    # Only the good generation is installed: nothing half-made stays behind.
    generations = sorted(p.name for p in (daemon.state / "generations").iterdir())
    assert generations == [daemon.good.sha256]
